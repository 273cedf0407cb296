package storage

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// The kill -9 and full-disk tests run a writing child process that prints
// each step the store acknowledged; the parent reads the lines (ackLines)
// and, once the child is gone, checks that a reopened store kept every one
// (checkAcknowledged).

// writeAcknowledged enqueues from workers goroutines, each payload padded
// with pad bytes or more, and completes the i-th enqueue of each worker by
// i % cycle: 0 delivered, 1 a retry an hour away, others left pending. It
// prints "OPEN" first, then "E <id> <payload>", "D <id>", "R <id>", and
// "ERR <error>" for each failure, after which a worker stops unless
// goOn. It returns when every worker has stopped.
func writeAcknowledged(s *Store, workers, pad, cycle int, goOn bool) {
	var mu sync.Mutex
	say := func(format string, a ...any) {
		mu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
		mu.Unlock()
	}
	say("OPEN")
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := 0; ; i++ {
				payload := fmt.Sprintf("w=%d&i=%d&%s", w, i, strings.Repeat("p", pad+i%(3*pad)))
				ds, err := s.Enqueue(context.Background(), []NewDelivery{{DIN: "K", Payload: []byte(payload)}})
				if err != nil {
					say("ERR %v", err)
					if !goOn {
						return
					}
					time.Sleep(2 * time.Millisecond)
					continue
				}
				id := ds[0].ID
				say("E %s %s", id, payload)
				var out Outcome
				switch i % cycle {
				case 0:
					out = Outcome{State: StateDelivered}
				case 1:
					out = Outcome{State: StatePending, NextAttempt: time.Now().Add(time.Hour)}
				default:
					continue // left to the spill, or to the next life's replay
				}
				if _, err := s.Complete(id, Attempt{Status: 200 + 303*(i%2)}, out); err != nil {
					say("ERR %v", err)
					if !goOn {
						return
					}
					continue
				}
				say("%s %s", map[bool]string{true: "D", false: "R"}[i%cycle == 0], id)
			}
		})
	}
	wg.Wait()
}

// startWriter starts this test binary running only test (a writing child),
// with env added, and returns it with a scanner of its lines and its stderr.
func startWriter(t *testing.T, test string, env ...string) (*exec.Cmd, *bufio.Scanner, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), env...)
	stderr := new(bytes.Buffer)
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 4096), 1<<20)
	return cmd, sc, stderr
}

// ackLines is what a writing child acknowledged.
type ackLines struct {
	enq     map[string]string // id → payload
	outcome map[string]string // id → D (delivered) or R (retry)
	errs    []string
	opened  bool
}

func newAckLines() *ackLines {
	return &ackLines{enq: map[string]string{}, outcome: map[string]string{}}
}

// add takes one line of the child's; it returns the text after "ERR " of
// an error line.
func (a *ackLines) add(line string) (errText string, isErr bool) {
	f := strings.Fields(line)
	switch {
	case line == "OPEN":
		a.opened = true
	case len(f) == 3 && f[0] == "E":
		a.enq[f[1]] = f[2]
	case len(f) == 2 && (f[0] == "D" || f[0] == "R"):
		a.outcome[f[1]] = f[0]
	case strings.HasPrefix(line, "ERR "):
		a.errs = append(a.errs, line[4:])
		return line[4:], true
	}
	return "", false
}

// merge adds what b acknowledged (a later life) to a.
func (a *ackLines) merge(b *ackLines) {
	for id, p := range b.enq {
		a.enq[id] = p
	}
	for id, o := range b.outcome {
		a.outcome[id] = o
	}
}

// checkAcknowledged fails the test unless s holds every enqueue a
// acknowledged, with its payload while pending, and every outcome it
// acknowledged. One acknowledged without its outcome may have had that
// outcome recorded just before the child died, unprinted: it may be in the
// state its i % cycle gives, or pending.
func checkAcknowledged(t *testing.T, s *Store, round string, a *ackLines, cycle int) {
	t.Helper()
	for id, payload := range a.enq {
		d, err := s.Get(id)
		if err != nil {
			t.Fatalf("%s: acknowledged %s lost: %v", round, id, err)
		}
		switch a.outcome[id] {
		case "D":
			if d.State != StateDelivered {
				t.Fatalf("%s: acknowledged delivery of %s lost: %s", round, id, d.State)
			}
			continue
		case "R":
			if d.State != StatePending || len(d.Attempts) != 1 || d.NextAttempt.Before(time.Now()) {
				t.Fatalf("%s: acknowledged retry of %s lost: %+v", round, id, d)
			}
		default:
			var w, i int
			fmt.Sscanf(payload, "w=%d&i=%d", &w, &i)
			recordable := map[int]State{0: StateDelivered, 1: StatePending}[i%cycle]
			if d.State != StatePending && d.State != recordable {
				t.Fatalf("%s: %s (i=%d) is %s", round, id, i, d.State)
			}
			if d.State == StateDelivered {
				continue
			}
		}
		p, err := s.Payload(id)
		if err != nil || string(p) != payload {
			t.Fatalf("%s: payload of %s = %.40q, %v; want %.40q", round, id, p, err, payload)
		}
	}
}
