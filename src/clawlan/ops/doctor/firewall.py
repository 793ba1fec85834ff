"""Reading a firewall: what the INPUT rules of iptables or nftables do with a TCP port.

Only unconditional rules decide (see ``Rule``); chains are followed as the
kernel does, so ufw's INPUT -> ufw-before-input -> ufw-user-input layout reads
right. Pure text parsing plus :func:`read_firewall`, which runs the tools.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterable


def _ports(spec: str) -> set[int]:
    out: set[int] = set()
    for part in spec.replace(" ", "").strip("{}").split(","):
        if not part:
            continue
        lo, _, hi = part.replace("-", ":").partition(":")
        with contextlib.suppress(ValueError):
            out.update(range(int(lo), int(hi or lo) + 1))
    return out


# A rule: the ports it covers (None: every port) and its target, a verdict (ACCEPT, DROP,
# REJECT), RETURN, or another chain to jump to. Only unconditional rules are kept (protocol and
# destination-port matches only): the others apply to some traffic (one source, interface or
# connection state), so they cannot decide what a new connection from the LAN meets.
Rule = tuple[set[int] | None, str]
VERDICTS = ("ACCEPT", "DROP", "REJECT")
MAX_JUMPS = 16  # chains calling chains deeper than this are a loop, not a firewall


def chain_verdict(chains: dict[str, list[Rule]], chain: str, port: int, depth: int = 0) -> str | None:
    """What ``chain`` does with a TCP connection to ``port``: a verdict, or None when it falls off
    the end or RETURNs (the caller's next rule then applies). User chains are followed, as ufw's
    INPUT -> ufw-before-input -> ufw-user-input, where ``ufw allow 8080`` puts its ACCEPT."""
    if depth > MAX_JUMPS:
        return None
    for covered, target in chains.get(chain, []):
        if covered is not None and port not in covered:
            continue
        if target in VERDICTS:
            return target
        if target == "RETURN":
            return None
        found = chain_verdict(chains, target, port, depth + 1)
        if found is not None:
            return found
    return None


def iptables_verdicts(rules: str, ports: Iterable[int]) -> dict[int, str]:
    """For each TCP port, what the INPUT chain of ``iptables-save``/``iptables -S`` output does.

    Rules are walked in order, into the chains they jump to; the first verdict that covers the
    port decides, else the INPUT chain's policy.
    """
    policy = "ACCEPT"
    chains: dict[str, list[Rule]] = {}
    for line in rules.splitlines():
        line = line.strip()
        m = re.match(r"^(?::INPUT|-P INPUT)\s+(\w+)", line)
        if m:
            policy = m.group(1)
            continue
        m = re.match(r"^-A (\S+) (.*)$", line)
        if not m:
            continue
        chain, body = m.groups()
        target = re.search(r"-[jg] (\S+)", body)
        if not target or target.group(1) in ("LOG", "NFLOG", "ULOG", "MARK", "CONNMARK"):
            continue  # non-terminating targets: the next rule decides
        body = body[: target.start()]
        body = re.sub(r'-m comment --comment ("[^"]*"|\S+)', "", body)
        body = re.sub(r"-m (tcp|multiport)\b", "", body)
        portspec = re.search(r"--dports? (\S+)", body)
        body = re.sub(r"--dports? \S+", "", body)
        proto = re.search(r"-p (\w+)", body)
        body = re.sub(r"-p \w+", "", body).strip()
        if body:  # conditional on something else
            continue
        if proto and proto.group(1) not in ("tcp", "all"):
            continue
        chains.setdefault(chain, []).append((_ports(portspec.group(1)) if portspec else None, target.group(1)))
    return {port: chain_verdict(chains, "INPUT", port) or policy for port in ports}


def nft_verdicts(ruleset: str, ports: Iterable[int]) -> dict[int, str]:
    """The same for ``nft list ruleset``: every chain hooked on input, into the chains it jumps to,
    first verdict, else its policy; any input chain that drops a port wins."""
    out: dict[int, str] = {p: "ACCEPT" for p in ports}
    for table in re.finditer(r"^table (\S+ \S+) \{(.*?)^\}", ruleset, re.S | re.M):
        chains: dict[str, list[Rule]] = {}
        policies: dict[str, str] = {}
        for chain in re.finditer(r"chain (\S+) \{(.*?)\n\s*\}", table.group(2), re.S):
            name, body = chain.groups()
            if re.search(r"hook input", body):
                pol = re.search(r"policy (\w+);", body)
                policies[name] = (pol.group(1) if pol else "accept").upper()
            rules: list[Rule] = chains.setdefault(name, [])
            for line in body.splitlines():
                line = line.strip()
                m = re.search(r"\b(accept|drop|reject|return)\b|\b(?:jump|goto) (\S+)", line)
                if not m or line.startswith("type "):
                    continue
                dport = re.search(r"tcp dport (\{[^}]*\}|\S+)", line)
                rest = re.sub(
                    r"tcp dport (\{[^}]*\}|\S+)|\b(accept|drop|reject|return)\b|\b(jump|goto) \S+"
                    r'|counter( packets \d+ bytes \d+)?|ip protocol tcp|meta l4proto tcp|comment "[^"]*"',
                    "",
                    line,
                )
                rest = re.sub(r"with \S+ \S+( \S+)?", "", rest).strip()
                if rest:
                    continue
                rules.append((_ports(dport.group(1)) if dport else None, (m.group(1) or "").upper() or m.group(2)))
        for name, policy in policies.items():
            for port in out:
                verdict = chain_verdict(chains, name, port) or policy
                if verdict != "ACCEPT":
                    out[port] = verdict
    return out


def read_firewall() -> list[tuple[str, str]]:
    """(tool, rules text) from every one of nft and iptables that can be read (both, on iptables-nft
    systems: each may hold rules the other does not show)."""
    out = []
    for tool, cmd in (("nft", ["nft", "list", "ruleset"]), ("iptables", ["iptables-save"])):
        exe = shutil.which(cmd[0])
        if not exe:
            continue
        try:
            r = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            out.append((tool, r.stdout))
    return out
