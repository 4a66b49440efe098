//! Load shapes: the intended arrival rate over time. Users pace themselves against it
//! (see `pace` in main.rs), so the rate does not drop when responses slow down.

use std::time::Duration;

/// The arrival rate over the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// `rate` requests/s throughout.
    Constant {
        /// Requests per second.
        rate: f64,
    },
    /// Linear from `from` to `to` requests/s over the whole run.
    Ramp {
        /// Starting rate.
        from: f64,
        /// Final rate.
        to: f64,
    },
    /// Starts at `from`, adds `step` requests/s every `every`: step-to-saturation.
    Step {
        /// Starting rate.
        from: f64,
        /// Increase per step.
        step: f64,
        /// Length of one step.
        every: Duration,
    },
}

impl Shape {
    /// Intended rate (requests/s) at `t` into a run of length `total`.
    pub fn rate_at(&self, t: Duration, total: Duration) -> f64 {
        let r = match *self {
            Shape::Constant { rate } => rate,
            Shape::Ramp { from, to } => {
                let f = (t.as_secs_f64() / total.as_secs_f64().max(1e-9)).clamp(0.0, 1.0);
                from + (to - from) * f
            }
            Shape::Step { from, step, every } => {
                let n = (t.as_secs_f64() / every.as_secs_f64().max(1e-9)).floor();
                from + step * n
            }
        };
        r.max(0.1)
    }

    /// Highest rate the run reaches (sizes the user pool).
    pub fn peak(&self, total: Duration) -> f64 {
        match *self {
            Shape::Constant { rate } => rate,
            Shape::Ramp { from, to } => from.max(to),
            Shape::Step { .. } => self.rate_at(total, total),
        }
    }

    /// Short description for the report.
    pub fn describe(&self) -> String {
        match *self {
            Shape::Constant { rate } => format!("constant {rate} req/s"),
            Shape::Ramp { from, to } => format!("ramp {from} → {to} req/s"),
            Shape::Step { from, step, every } => {
                format!(
                    "step from {from} req/s, +{step} req/s every {}",
                    humantime::format_duration(every)
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let total = Duration::from_secs(100);
        assert_eq!(
            Shape::Constant { rate: 5.0 }.rate_at(Duration::from_secs(50), total),
            5.0
        );
        assert_eq!(
            Shape::Ramp { from: 10.0, to: 110.0 }.rate_at(Duration::from_secs(50), total),
            60.0
        );
        let s = Shape::Step {
            from: 10.0,
            step: 10.0,
            every: Duration::from_secs(20),
        };
        assert_eq!(s.rate_at(Duration::from_secs(45), total), 30.0);
        assert_eq!(s.peak(total), 60.0);
    }
}
