"""Write racks_inter_links.csv for s4_two_racks.toml: the inter-rack links of the base profile
(s1_no_faults.toml's seeded random latencies, 10 Gbit/s), 100x slower in latency and bandwidth."""

from pathlib import Path

from peergrad.system import load_profile

here = Path(__file__).resolve().parent
lat, bw = load_profile(here / "s1_no_faults.toml", n_workers=16).links.matrices(16)
rack = [0] * 8 + [1] * 8
with open(here / "racks_inter_links.csv", "w") as f:
    f.write("src,dst,latency_ms,bandwidth_gbps\n")
    for s in range(16):
        for d in range(16):
            if rack[s] != rack[d]:
                f.write(f"{s},{d},{lat[s, d].item() * 1e3 * 100!r},{bw[s, d].item() * 8 / 1e9 / 100!r}\n")
