#!/usr/bin/env python3
"""Checks of the deployment files under contrib/ for tests/integration/contrib.sh.

    contriblint.py yaml FILE              parse every document (needs PyYAML)
    contriblint.py toml FILE              parse (Python 3.11 tomllib)
    contriblint.py configmap-files FILE DIR
                                          write each ConfigMap data entry of
                                          FILE to DIR/NAME/KEY, print the paths
    contriblint.py dockerfile FILE [CONTEXT]
                                          instructions, stages, USER, HEALTHCHECK;
                                          with CONTEXT, that what COPY takes
                                          from the build context exists
    contriblint.py dockerfile-runtime-packages FILE
                                          the packages apt-get installs in the
                                          last stage, one a line
    contriblint.py dashboard FILE         Grafana: data source variable, every
                                          query on it; prints the metric names
    contriblint.py k8s FILE               pod templates: regcache containers
                                          probed on /healthz and /readyz, not
                                          root, read-only root file system;
                                          scrape annotations; mounts, volumes
                                          and ConfigMaps that match
    contriblint.py mdlinks FILE           relative Markdown links that lead
                                          nowhere

Each exits 0 when the check passes, 1 with the reasons on stderr when it
does not, and 2 when it cannot run (a module missing).
"""

import json
import os
import re
import sys


def fail(msgs):
    for m in msgs:
        print(m, file=sys.stderr)
    sys.exit(1 if msgs else 0)


def load_yaml_docs(path):
    try:
        import yaml
    except ImportError:
        print("PyYAML is not installed", file=sys.stderr)
        sys.exit(2)
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def cmd_yaml(path):
    docs = load_yaml_docs(path)
    if not docs:
        fail([f"{path}: no YAML document"])
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            fail([f"{path}: document {i + 1} is not a mapping"])
        if "kind" in d and "apiVersion" not in d:
            fail([f"{path}: document {i + 1} ({d['kind']}) has no apiVersion"])
    print(f"{path}: {len(docs)} documents")


def cmd_toml(path):
    try:
        import tomllib
    except ImportError:
        print("tomllib needs Python 3.11", file=sys.stderr)
        sys.exit(2)
    with open(path, "rb") as f:
        tomllib.load(f)


def cmd_configmap_files(path, outdir):
    for d in load_yaml_docs(path):
        if d.get("kind") != "ConfigMap":
            continue
        name = d["metadata"]["name"]
        for key, text in (d.get("data") or {}).items():
            os.makedirs(os.path.join(outdir, name), exist_ok=True)
            out = os.path.join(outdir, name, key)
            with open(out, "w", encoding="utf-8") as f:
                f.write(text)
            print(out)


INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY",
                "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD",
                "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}


def dockerfile_instructions(path):
    """(line number, INSTRUCTION, arguments), continuation lines joined."""
    out, cur, start = [], None, 0
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            s = line.rstrip("\n")
            if cur is None:
                if not s.strip() or s.lstrip().startswith("#"):
                    continue
                cur, start = "", n
            elif s.lstrip().startswith("#"):
                continue    # a comment inside a continued instruction
            if s.endswith("\\"):
                cur += s[:-1] + " "
                continue
            cur += s
            word, _, rest = cur.strip().partition(" ")
            out.append((start, word, rest.strip()))
            cur = None
    if cur is not None:
        out.append((start, "<unterminated>", cur))
    return out


def dockerfile_stages(path):
    stages = []
    for n, word, rest in dockerfile_instructions(path):
        if word.upper() == "FROM":
            m = re.match(r"(?:--platform=\S+\s+)?(\S+)(?:\s+[Aa][Ss]\s+(\S+))?$", rest)
            stages.append({"line": n, "image": m.group(1) if m else rest,
                           "name": m.group(2) if m else None, "body": []})
        elif stages:
            stages[-1]["body"].append((n, word.upper(), rest))
    return stages


def cmd_dockerfile(path, context=None):
    errs = []
    for n, word, rest in dockerfile_instructions(path):
        if word.upper() not in INSTRUCTIONS:
            errs.append(f"{path}:{n}: unknown instruction {word!r}")
        elif word != word.upper():
            errs.append(f"{path}:{n}: write instructions in upper case ({word})")
    stages = dockerfile_stages(path)
    if len(stages) < 2:
        errs.append(f"{path}: not multi-stage ({len(stages)} FROM)")
    names = []
    for st in stages:
        if not re.match(r"(docker\.io/)?(library/)?debian:bookworm", st["image"]):
            errs.append(f"{path}:{st['line']}: FROM {st['image']}: not Debian bookworm")
        for n, word, rest in st["body"]:
            m = re.search(r"--from=(\S+)", rest) if word == "COPY" else None
            if m and m.group(1) not in names:
                errs.append(f"{path}:{n}: COPY --from={m.group(1)}: no earlier stage of that name")
            if word in ("COPY", "ADD") and not m and context is not None:
                srcs = [a for a in rest.split() if not a.startswith("--")][:-1]
                for src in srcs:
                    if not os.path.exists(os.path.join(context, src)):
                        errs.append(f"{path}:{n}: {word} {src}: not in the build context")
        if st["name"]:
            names.append(st["name"])
    if stages:
        final = stages[-1]["body"]
        users = [rest for _, word, rest in final if word == "USER"]
        if not users:
            errs.append(f"{path}: the final stage sets no USER (runs as root)")
        elif users[-1].split(":")[0] in ("root", "0"):
            errs.append(f"{path}: the final stage runs as {users[-1]}")
        hc = [rest for _, word, rest in final if word == "HEALTHCHECK"]
        if not hc or hc[-1].upper().startswith("NONE"):
            errs.append(f"{path}: the final stage has no HEALTHCHECK")
        if not any(word in ("ENTRYPOINT", "CMD") for _, word, _ in final):
            errs.append(f"{path}: the final stage has neither ENTRYPOINT nor CMD")
    fail(errs)


def cmd_dockerfile_runtime_packages(path):
    stages = dockerfile_stages(path)
    for _, word, rest in stages[-1]["body"]:
        if word != "RUN":
            continue
        for cmd in re.split(r"&&|;", rest):
            toks = cmd.split()
            if "apt-get" in toks and "install" in toks:
                for t in toks[toks.index("install") + 1:]:
                    if not t.startswith("-"):
                        print(t)


def cmd_dashboard(path):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    errs = []
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        errs.append(f"schemaVersion {d.get('schemaVersion')!r}: want 36 or later")
    tvars = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = tvars.get("DS_PROMETHEUS")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errs.append("no template variable DS_PROMETHEUS of type datasource (prometheus)")
    want = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    metrics, ids = set(), set()

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(d.get("panels", [])):
        title = p.get("title", "?")
        if p.get("id") in ids:
            errs.append(f"panel {title!r}: id {p.get('id')} used twice")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            errs.append(f"panel {title!r}: no gridPos")
        if p.get("type") == "row":
            continue
        if p.get("datasource") != want:
            errs.append(f"panel {title!r}: data source {p.get('datasource')!r}")
        if not p.get("targets"):
            errs.append(f"panel {title!r}: no queries")
        for t in p.get("targets", []):
            if t.get("datasource") != want:
                errs.append(f"panel {title!r} query {t.get('refId')}: data source {t.get('datasource')!r}")
            expr = t.get("expr", "")
            if expr.count("(") != expr.count(")") or expr.count("{") != expr.count("}"):
                errs.append(f"panel {title!r} query {t.get('refId')}: unbalanced brackets")
            metrics.update(re.findall(r"\bregcache_[a-z0-9_]+", expr))
    for v in tvars.values():
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query", "")
        metrics.update(re.findall(r"\bregcache_[a-z0-9_]+", str(q)))
    for m in sorted(metrics):
        print(m)
    fail(errs)


def cmd_k8s(path, drain=30):
    docs = load_yaml_docs(path)
    errs = []
    configmaps = {d["metadata"]["name"] for d in docs if d.get("kind") == "ConfigMap"}
    for d in docs:
        tpl = d.get("spec", {}).get("template")
        if d.get("kind") == "Pod":
            tpl = d
        if not tpl:
            continue
        what = f"{d['kind']} {d['metadata']['name']}"
        spec = tpl["spec"]
        ann = tpl.get("metadata", {}).get("annotations", {})
        for k, v in (("prometheus.io/scrape", "true"), ("prometheus.io/port", "5001"),
                     ("prometheus.io/path", "/metrics")):
            if ann.get(k) != v:
                errs.append(f"{what}: annotation {k} is {ann.get(k)!r}, want {v!r}")
        if spec.get("terminationGracePeriodSeconds", 30) <= drain:
            errs.append(f"{what}: terminationGracePeriodSeconds not above the drain timeout ({drain} s)")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for v in volumes.values():
            cm = v.get("configMap", {}).get("name")
            if cm is not None and cm not in configmaps:
                errs.append(f"{what}: volume {v['name']}: no ConfigMap {cm} in {path}")
        containers = spec.get("containers", []) + spec.get("initContainers", [])
        daemons = 0
        for c in containers:
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes:
                    errs.append(f"{what}: container {c['name']} mounts {m['name']}: no such volume")
            sc = dict(spec.get("securityContext", {}))
            sc.update(c.get("securityContext", {}))
            if sc.get("allowPrivilegeEscalation") is not False:
                errs.append(f"{what}: container {c['name']}: allowPrivilegeEscalation is not false")
            args = c.get("args", []) + c.get("command", [])
            # The regcache daemon: a container running `serve`, or the
            # native sidecar (an init container with restartPolicy Always).
            if "serve" not in args:
                continue
            daemons += 1
            for probe, want in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                got = c.get(probe, {}).get("httpGet", {}).get("path")
                if got != want:
                    errs.append(f"{what}: container {c['name']}: {probe} on {got!r}, want {want}")
            if sc.get("runAsNonRoot") is not True or sc.get("runAsUser", 0) == 0:
                errs.append(f"{what}: container {c['name']}: not runAsNonRoot with a non-zero runAsUser")
            if sc.get("readOnlyRootFilesystem") is not True:
                errs.append(f"{what}: container {c['name']}: root file system not read-only")
            if c in spec.get("initContainers", []) and c.get("restartPolicy") != "Always":
                errs.append(f"{what}: init container {c['name']} runs serve but is no sidecar")
            if not c.get("resources", {}).get("limits", {}).get("memory"):
                errs.append(f"{what}: container {c['name']}: no memory limit")
        if daemons != 1:
            errs.append(f"{what}: {daemons} containers run regcache serve, want 1")
    fail(errs)


def cmd_mdlinks(path):
    base = os.path.dirname(path)
    errs = []
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        target = target.split("#")[0]
        if not os.path.exists(os.path.join(base, target)):
            errs.append(f"{path}: link to {target}: no such file")
    fail(errs)


def main():
    cmds = {"yaml": cmd_yaml, "toml": cmd_toml,
            "configmap-files": cmd_configmap_files,
            "dockerfile": cmd_dockerfile,
            "dockerfile-runtime-packages": cmd_dockerfile_runtime_packages,
            "dashboard": cmd_dashboard, "k8s": cmd_k8s, "mdlinks": cmd_mdlinks}
    if len(sys.argv) < 3 or sys.argv[1] not in cmds:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except Exception as e:    # a parse error: report it as a failed check
        print(f"{sys.argv[1]} {' '.join(sys.argv[2:])}: {type(e).__name__}: {e}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
