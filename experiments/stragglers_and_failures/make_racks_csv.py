"""Write the inter-rack links of the two-racks scenario: the base profile's links (s1_no_faults:
seeded random latencies, 10 Gbit/s) between the two halves of the workers, 100x slower in both
latency and bandwidth.

Usage: python make_racks_csv.py [N]   (N = 16: racks_inter_links.csv here; other N:
n{N}/racks_inter_links.csv, for the profiles in n{N}/)
"""

import sys
from pathlib import Path

from peergrad.system import load_profile

n = int(sys.argv[1]) if len(sys.argv) > 1 else 16
here = Path(__file__).resolve().parent
folder = here if n == 16 else here / f"n{n}"
lat, bw = load_profile(folder / "s1_no_faults.toml", n_workers=n).links.matrices(n)
rack = [0] * (n // 2) + [1] * (n - n // 2)
with open(folder / "racks_inter_links.csv", "w") as f:
    f.write("src,dst,latency_ms,bandwidth_gbps\n")
    for s in range(n):
        for d in range(n):
            if rack[s] != rack[d]:
                ms = lat[s, d].item() * 1e3 * 100
                gbps = bw[s, d].item() * 8 / 1e9 / 100
                f.write(f"{s},{d},{ms!r},{gbps!r}\n")
