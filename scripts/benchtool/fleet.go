package main

import (
	"fmt"
	"io"
)

// fleetNames are the servers of bench.sh's fleet_rounds, in their order.
var fleetNames = []struct{ key, label string }{
	{"plain", "plain Caddy `reverse_proxy`"},
	{"one", "the chain, its queue on its own disk (Badger, synced)"},
	{"js", "the chain with `queue jetstream`: R3 on three NATS servers on the same machine"},
}

// writeFleet writes the table of queue jetstream beside the single-node
// chain, if the fleet rounds ran.
func writeFleet(w io.Writer, byKind map[string][]result, rate string) {
	if len(byKind["fleet_wrk"]) == 0 && len(byKind["fleet_rate"]) == 0 {
		return
	}
	rows := roundRows(byKind["fleet_wrk"], byKind["fleet_rate"], fleetNames)
	fmt.Fprintln(w, "A fleet (`BENCH_FLEET`): the chain with `queue jetstream` (the copy acknowledged by a quorum of three JetStream servers before the request goes on) beside the single-node chain, in alternation with plain Caddy; both copy to the sink. wrk as above, then the open loop at "+rate+" req/s:")
	writeRows(w, rows, fleetNames)
	var backlog, elapsed float64
	stuck := 0
	for _, d := range byKind["fleet_drain"] {
		if d.str("server") == "js" {
			backlog += d.num("backlog")
			elapsed += d.num("seconds")
			if d["drained"] != true {
				stuck++
			}
		}
	}
	if elapsed > 0 {
		fmt.Fprintf(w, "After its wrk runs the queue jetstream chain's backlog (%.0f deliveries in all) drained at %.0f deliveries/s", backlog, backlog/elapsed)
		if stuck > 0 {
			fmt.Fprintf(w, "; %d of its drains did NOT finish in time", stuck)
		}
		fmt.Fprintln(w, ". The NATS servers' CPU is not in the server column: three more processes on the same two cores.")
		fmt.Fprintln(w)
	}
}
