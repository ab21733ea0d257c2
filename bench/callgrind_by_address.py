#!/usr/bin/env python3
"""bench/callgrind_by_address.py BINARY DUMP_A DUMP_B N [TOP]

Sets two callgrind dumps of bench/load.sh side by side, per request, by the
function each instruction belongs to: what site A costs more than site B,
function by function, and the plugin's own functions in A.

The dumps must be made with --dump-instr=yes, of a binary with symbols:
  XCADDY_GO_BUILD_FLAGS="-trimpath -tags nobadger,nomysql,nopgx" ./xcaddy.sh /tmp/caddy-sym
  CADDY=/tmp/caddy-sym INSTRUCTIONS=3000 CALLGRIND_DIR=/tmp/cg \
      CALLGRIND_ARGS=--dump-instr=yes bench/load.sh
  bench/callgrind_by_address.py /tmp/caddy-sym /tmp/cg/callgrind.EdDSA-bearer-A \
      /tmp/cg/callgrind.EdDSA-bearer-B 3000
Costs are summed by instruction address and mapped to the binary's symbols
(go tool nm): callgrind's own function contexts are wrong for Go, whose
goroutine switches it cannot follow."""
import bisect, collections, re, subprocess, sys

def symbols(binary):
    out = subprocess.run(["go", "tool", "nm", "-sort", "address", "-size", binary], capture_output=True, text=True).stdout
    addrs, names = [], []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4 and parts[2] in ("T", "t"):
            addrs.append(int(parts[0], 16)); names.append(parts[3])
    return addrs, names

def costs(dump):
    c = collections.Counter()
    last = 0
    skip = False
    npos = 1
    for line in open(dump, errors="replace"):
        if line.startswith("positions:"):
            npos = len(line.split()) - 1
            continue
        if line.startswith("calls="):
            skip = True
            continue
        if not line or not (line[0] in "+-*" or line.startswith("0x")):
            continue
        f = line.split()
        if len(f) < npos + 1:
            continue
        p = f[0]
        if p.startswith("0x"):
            last = int(p, 16)
        elif p != "*":
            last += int(p)
        if skip:
            skip = False
            continue
        c[last] += int(f[npos])
    return c

def byfunc(dump, addrs, names):
    f = collections.Counter()
    for a, n in costs(dump).items():
        i = bisect.bisect_right(addrs, a) - 1
        f[names[i] if i >= 0 else "?"] += n
    return f

if __name__ == "__main__":
    binary, a, b, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    top = int(sys.argv[5]) if len(sys.argv) > 5 else 40
    addrs, names = symbols(binary)
    fa, fb = byfunc(a, addrs, names), byfunc(b, addrs, names)
    print("per request: A %.0f  B %.0f" % (sum(fa.values()) / n, sum(fb.values()) / n))
    diff = {k: (fa[k] - fb[k]) / n for k in set(fa) | set(fb)}
    for k, v in sorted(diff.items(), key=lambda x: -abs(x[1]))[:top]:
        print("%8.0f %8.0f %8.0f  %s" % (v, fa[k] / n, fb[k] / n, k[:110]))
    pw = {k: v / n for k, v in fa.items() if "passwordless" in k}
    print("plugin functions in A: %.0f" % sum(pw.values()))
    for k, v in sorted(pw.items(), key=lambda x: -x[1])[:25]:
        print("%8.0f  %s" % (v, k[:110]))
