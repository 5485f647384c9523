"""SNI selection: lookups per second of node.selection.SniIndex vs a linear service-identity scan.

Run: ``.venv/bin/python benchmarks/bench_sni.py [--seconds S]``. Not a test; prints a table.

Workload, per size N (10, 1 000, 10 000 certificates): 70 % of the certificates carry two
exact names (``svcI.tenantJ.example.com`` and ``www.svcI...``), 30 % one wildcard
(``*.poolI.example.net``) plus its apex. The lookup stream (10 000 fresh name objects, see
``make_names``) picks certificates uniformly (every certificate as popular: the worst case
for CPU caches) and, second, Zipf-like (s = 1.1: a few names carry most handshakes, as on
real endpoints); 85 % hits (exact and wildcard), 15 % misses. ``SniIndex.lookup`` is
measured warm (names seen before answer from its bounded memo) and ``resolve`` cold (the
full rules on every call).

Baseline: what a server without an index does, a linear scan over the certificates
calling ``service_identity.hazmat.verify_service_identity`` with a ``DNS_ID`` against each
certificate's pre-built ``DNSPattern`` list, stopping at the first match (more generous to
the baseline than the full exact-beats-wildcard rule, which needs a complete scan).
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from service_identity import CertificateError, VerificationError, hazmat

from node.names import SanSet  # after the sys.path line above
from node.selection import SniEntry, SniIndex  # after the sys.path line above

SIZES = (10, 1_000, 10_000)
T0 = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def make_entries(n: int, rng: random.Random) -> list[SniEntry]:
    entries = []
    for i in range(n):
        if rng.random() < 0.7:
            base = f"svc{i}.tenant{i % 97}.example.com"
            sans = SanSet(dns_names=(base, f"www.{base}"))
        else:
            sans = SanSet(dns_names=(f"*.pool{i}.example.net", f"pool{i}.example.net"))
        entries.append(SniEntry(f"{i:064x}", sans, T0 + dt.timedelta(days=rng.randrange(400))))
    return entries


def make_names(
    entries: Sequence[SniEntry], count: int, rng: random.Random, skew: float | None
) -> list[str]:
    """The lookup stream: certificates picked uniformly (``skew=None``) or Zipf-like.

    85 % of the names are hits on the picked certificate (one of its exact names, a tenth
    of them upper-case or with a trailing dot; for a wildcard certificate mostly a host under
    it), 15 % misses. Every name is a fresh string object, as an SNI callback receives it.
    """
    weights = [1.0 / (rank + 1) ** skew for rank in range(len(entries))] if skew else None
    picks = rng.choices(range(len(entries)), weights=weights, k=count)
    names = []
    for i in picks:
        sans = entries[i].sans.dns_names
        r = rng.random()
        if sans[0].startswith("*."):
            parent = sans[0][2:]
            if r < 0.15:
                name = rng.choice([f"a.b.{parent}", f"x{rng.randrange(10**6)}.example.org"])
            elif r < 0.3:
                name = parent
            else:
                name = f"host{rng.randrange(1000)}.{parent}"
        elif r < 0.15:
            name = f"unknown{rng.randrange(10**6)}.example.org"
        else:
            name = rng.choice(sans)
            if rng.random() < 0.1:
                name = rng.choice([name.upper(), name + "."])
        names.append((name + " ")[:-1])  # a new object, never the SAN string itself
    return names


def rate(run_once: Callable[[], int], seconds: float) -> float:
    """Lookups per second: the median of five timed rounds, each at least seconds/5 long."""
    rounds = []
    for _ in range(5):
        done = 0
        start = time.perf_counter()
        deadline = start + seconds / 5
        while True:
            done += run_once()
            now = time.perf_counter()
            if now >= deadline:
                break
        rounds.append(done / (now - start))
    return statistics.median(rounds)


def ours(lookup: Callable[[str], object], names: Sequence[str]) -> Callable[[], int]:
    def run_once() -> int:
        for name in names:
            lookup(name)
        return len(names)

    return run_once


def linear_lookup(entries: Sequence[SniEntry]) -> Callable[[str], str | None]:
    """The baseline server: scan every certificate with service-identity, first match wins."""
    patterns = [
        [hazmat.DNSPattern.from_bytes(san.encode()) for san in e.sans.dns_names] for e in entries
    ]
    keys = [e.key for e in entries]

    def lookup(name: str) -> str | None:
        try:
            ids = [hazmat.DNS_ID(name.rstrip("."))]
        except (ValueError, CertificateError):
            return None
        for key, cert_patterns in zip(keys, patterns, strict=True):
            try:
                hazmat.verify_service_identity(cert_patterns, ids, [])
            except VerificationError:
                continue
            return key
        return None

    return lookup


def baseline(entries: Sequence[SniEntry], names: Sequence[str]) -> Callable[[], int]:
    lookup = linear_lookup(entries)
    position = 0

    def run_once() -> int:  # a slice of the names per call, so a round can stop early
        nonlocal position
        for _ in range(10):
            lookup(names[position % len(names)])
            position += 1
        return 10

    return run_once


def agreement(index: SniIndex, entries: Sequence[SniEntry], names: Sequence[str]) -> float:
    """Share of the first 300 names where ours and the baseline agree on hit vs miss."""
    lookup = linear_lookup(entries)
    sample = names[:300]
    same = sum((index.lookup(n).reason != "default") == (lookup(n) is not None) for n in sample)
    return same / len(sample)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    args = parser.parse_args(argv)
    print(f"python {sys.version.split()[0]}; {args.seconds:g} s per measurement, median of 5")
    for mix, skew in (("uniform", None), ("zipf s=1.1", 1.1)):
        rng = random.Random(20260101)
        print(f"\nlookup stream: certificates picked {mix}")
        print(
            f"{'certs':>7} {'SniIndex lookups/s':>20} {'cold (no memo)':>16} "
            f"{'linear s-i lookups/s':>22} {'speed-up':>10} {'agree':>6}"
        )
        warm: dict[int, float] = {}
        for n in SIZES:
            entries = make_entries(n, rng)
            names = make_names(entries, 10_000, rng, skew)
            index = SniIndex.build(entries, default=entries[0].key)
            warm[n] = rate(ours(index.lookup, names), args.seconds)
            cold = rate(ours(index.resolve, names), args.seconds)
            theirs = rate(baseline(entries, names), args.seconds)
            agree = agreement(index, entries, names)
            print(
                f"{n:>7} {warm[n]:>20,.0f} {cold:>16,.0f} {theirs:>22,.0f} "
                f"{warm[n] / theirs:>9,.0f}x {agree:>6.0%}"
            )
        print(
            f"SniIndex.lookup at {SIZES[-1]:,} certificates: {warm[SIZES[-1]]:,.0f}/s "
            f"(goal >= 1,000,000/s); slowdown {SIZES[0]} -> {SIZES[-1]:,}: "
            f"{warm[SIZES[0]] / warm[SIZES[-1]]:.2f}x (goal <= 1.5x)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
