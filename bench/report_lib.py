"""What bench/report.py and bench/pipeline/report.py share (standard library only).

The scripts write a key=value META file and a tab-separated results file; the
report generators read both and print Markdown tables built with these helpers.
"""


def read_meta(path):
    """The key=value lines of a META file, as a dict (later keys win)."""
    meta = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return meta


def read_tsv(path, fields):
    """Yields one dict per line of a results file that has exactly the given
    fields (tab-separated; other lines are skipped)."""
    with open(path) as f:
        for line in f:
            vals = line.rstrip("\n").split("\t")
            if len(vals) == len(fields):
                yield dict(zip(fields, vals))


def per_req_us(ticks, clk_tck, ok):
    """CPU µs per request from clock ticks over `ok` requests (None for none)."""
    return ticks / clk_tck * 1e6 / ok if ok else None


def fmt(v, spec="{:.2f}", none="–"):
    """v formatted with spec, or `none` for a missing value."""
    return none if v is None else spec.format(v)


def pct(v):
    """A share as a percentage (None stays None)."""
    return None if v is None else v * 100


def ratio(a, b):
    """a ÷ b, or None when either is missing or b is 0."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def md_row(cells):
    """One Markdown table row."""
    return "| " + " | ".join(str(c) for c in cells) + " |"


def md_rule(aligns, right="---:"):
    """The rule under a Markdown table header: one cell per character of
    aligns, "l" left-aligned ("---"), "r" right-aligned (`right`)."""
    return "|" + "".join(("---" if a == "l" else right) + "|" for a in aligns)
