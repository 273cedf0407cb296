// Command benchtool is the helper of scripts/bench.sh (`make bench`): the
// upstream stand-in, the destination sink, the wrk Lua script with a signed
// notification, the queue filler and probes for the 1,000,000-pending test,
// and the report that turns the raw results into the Markdown tables of
// BENCHMARKS.md. Every subcommand works on 127.0.0.1 only.
//
//	benchtool upstream  -addr 127.0.0.1:P
//	benchtool sink      -tls 127.0.0.1:P -http 127.0.0.1:P -certs DIR
//	benchtool wrklua    -secret S -prefix c -out FILE
//	benchtool count     -url http://127.0.0.1:P/__count
//	benchtool drain     -admin 127.0.0.1:P -sink URL -want N -timeout D
//	benchtool fill      -dir DIR -n N -size 1024 -din 1001
//	benchtool firstserve -url URL -body FILE -log FILE -- caddy run ...
//	benchtool rss       -pid PID -for D -admin 127.0.0.1:P
//	benchtool tag       key=value... < json
//	benchtool ports     -n N
//	benchtool cpuprobe
//	benchtool jitter    -d 3s
//	benchtool fsynclat  -dir DIR -d 3s
//	benchtool storelat  -dir DIR -rate 2000 -conns 32 -workers 4 -d 8s
//	benchtool load      -url URL -body FILE -rate R -conns 32 -d 10s
//	benchtool report    -in results.jsonl
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmds := map[string]func([]string) error{
		"upstream":   cmdUpstream,
		"sink":       cmdSink,
		"wrklua":     cmdWrkLua,
		"count":      cmdCount,
		"drain":      cmdDrain,
		"fill":       cmdFill,
		"firstserve": cmdFirstServe,
		"rss":        cmdRSS,
		"notelog":    cmdNotelog,
		"tag":        cmdTag,
		"ports":      cmdPorts,
		"load":       cmdLoad,
		"storelat":   cmdStoreLat,
		"fsynclat":   cmdFsyncLat,
		"cpuprobe":   cmdCPUProbe,
		"jitter":     cmdJitter,
		"report":     cmdReport,
	}
	f, ok := cmds[os.Args[1]]
	if !ok {
		usage()
	}
	if err := f(os.Args[2:]); err != nil {
		fmt.Fprintf(os.Stderr, "benchtool %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: benchtool upstream|sink|wrklua|count|drain|fill|firstserve|rss|notelog|tag|ports|load|storelat|fsynclat|cpuprobe|jitter|report [flags]")
	os.Exit(2)
}
