"""How true the emulated link is: the round trip each transport measures through the fault
proxy, against what the proxy was told to add.

For each transport: the median request round trip direct, through the proxy unshaped (its
own overhead), with a fixed delay D each way (expected +2D), and with a bandwidth B for a
payload of P bytes (expected +P/B). Medians within one run, because this machine is noisy.

    python -m harness.bench.link --round-trips 21
"""

from __future__ import annotations

import argparse
import dataclasses
import logging

from rich.console import Console
from rich.table import Table

from harness.bench.payloads import action_reply
from harness.bench.peer import start_answering
from harness.bench.timing import median_round_trip_s
from harness.faults.proxy import FaultProxy, LinkShape
from transports import make_client, transport_entry, transport_names
from transports.loopback import loopback_address, loopback_config, tcp_host_port

DELAYS_S = (0.025, 0.100)
BANDWIDTH_BPS, BANDWIDTH_PAYLOAD = 8e6, 200_000


class ProxiedLink:
    """A transport's answering server, a client dialing it directly, and one dialing it
    through a fault proxy."""

    def __init__(self, config) -> None:
        self.config = config
        self.stop_server = start_answering(config, action_reply())
        host, port = tcp_host_port(config.kind, config.connect_address)
        self.proxy = FaultProxy(host, port)
        proxied = dataclasses.replace(config,
                                      connect=loopback_address(config.kind, self.proxy.start()))
        self.direct = make_client(config)
        self.proxied = make_client(proxied)
        self.direct.wait_ready(10.0)
        self.proxied.wait_ready(10.0)

    def close(self) -> None:
        self.direct.close()
        self.proxied.close()
        self.proxy.stop()
        self.stop_server()


def measure(kind: str, round_trips: int) -> dict[str, float]:
    """Added round trip, seconds, of every shape the proxy offers, on `kind`."""
    link = ProxiedLink(loopback_config(kind, max_message_bytes=16 * 2**20))
    try:
        small, large = b"x" * 300, bytes(BANDWIDTH_PAYLOAD)
        direct = median_round_trip_s(link.direct, small, round_trips)
        row = {"direct_ms": direct * 1e3,
               "overhead_ms": (median_round_trip_s(link.proxied, small, round_trips)
                                     - direct) * 1e3}
        for delay_s in DELAYS_S:
            idle_direct = median_round_trip_s(link.direct, small, round_trips,
                                              idle_s=2 * delay_s)
            link.proxy.set_shape(LinkShape(delay_s=delay_s))
            row[f"D={delay_s * 1e3:g}_added_ms"] = (
                median_round_trip_s(link.proxied, small, round_trips) - idle_direct) * 1e3
        link.proxy.set_shape(LinkShape())
        unshaped = median_round_trip_s(link.proxied, large, max(5, round_trips // 3))
        link.proxy.set_shape(LinkShape(bandwidth_bps=BANDWIDTH_BPS))
        shaped = median_round_trip_s(link.proxied, large, max(5, round_trips // 3))
        row["P/B_added_ms"] = (shaped - unshaped) * 1e3
        row["P/B_ms"] = 8 * BANDWIDTH_PAYLOAD / BANDWIDTH_BPS * 1e3
        return row
    finally:
        link.close()


def tcp_transports() -> list[str]:
    """Registered backends a fault proxy can sit in front of: those with a TCP address."""
    return [name for name in transport_names() if transport_entry(name).tcp_prefix is not None]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m harness.bench.link", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=21)
    parser.add_argument("--transports", default=",".join(tcp_transports()),
                        help="comma-separated backends with a TCP address (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    table = Table(title="round trip through the fault proxy (median ms)",
                  caption=f"D: delay each way (expect +2D); P/B: {BANDWIDTH_PAYLOAD} B at "
                          f"{BANDWIDTH_BPS / 1e6:g} Mbit/s")
    rows = {kind: measure(kind, args.round_trips) for kind in args.transports.split(",")}
    columns = list(next(iter(rows.values())))
    table.add_column("transport")
    for column in columns:
        table.add_column(column.removesuffix("_ms"), justify="right")
    for kind, row in rows.items():
        table.add_row(kind, *(f"{row[c]:.2f}" for c in columns))
    Console().print(table)


if __name__ == "__main__":
    main()
