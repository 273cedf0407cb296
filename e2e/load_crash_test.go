package e2e

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// e2eDBKey is the store's encryption key in the tests that set one (32
// bytes as 64 hex characters, passed through the environment as an operator
// would).
var e2eDBKey = hex.EncodeToString([]byte("caddy-postback e2e key 32 bytes!"))

// loadConfig is itns.php behind the full edge (filter, signature, age,
// secondary_post to DIN 1001), with the store encrypted at rest.
func loadConfig(storeDir, destURL, caFile, root, php string, port int) string {
	return caddyfile{
		store:    storeDir,
		postback: "encryption_key {env.E2E_DB_KEY}",
		dests: []destination{{din: "1001", url: destURL, ca: caFile,
			opts: "timeout 5s\nretry_schedule 0s 100ms 200ms 500ms 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s 1s"}},
		sites: []site{{port: port, root: root, body: itnsRoute("allow 127.0.0.1", "", "1001", php)}},
	}.String()
}

// loadSender posts signed notifications, each with its own tranreceipt,
// until stop is closed, and records what it saw. A notification whose post
// failed (edge down, connection cut, 5xx) is sent again, as a real sender
// retries, at most maxTries times.
type loadSender struct {
	t        testing.TB
	endpoint string
	signer   *handlers.ITNS
	client   *http.Client
	next     atomic.Int64

	mu       sync.Mutex
	sent     map[string]bool      // every distinct body sent at least once
	accepted map[string]bool      // bodies answered with a 2xx
	at       map[string]time.Time // when each was accepted
	attempts int
	errs     map[string]int // failure kind → count
}

// A sender's patience with one notification.
const (
	maxTries     = 200
	maxRetryTime = 30 * time.Second
)

func newLoadSender(t testing.TB, endpoint string) *loadSender {
	signer, err := handlers.NewITNS(handlers.ITNSConfig{Secrets: [][]byte{[]byte(itnsSecret)}})
	if err != nil {
		t.Fatal(err)
	}
	return &loadSender{
		t: t, endpoint: endpoint, signer: signer,
		client:   &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
		sent:     map[string]bool{},
		accepted: map[string]bool{},
		at:       map[string]time.Time{},
		errs:     map[string]int{},
	}
}

func (s *loadSender) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		i := s.next.Add(1)
		body, err := s.signer.SignForm(itnsFields("", fmt.Sprintf("LOAD%08d", i), time.Now()))
		if err != nil {
			s.t.Errorf("sign: %v", err)
			return
		}
		s.mu.Lock()
		s.sent[body] = true
		s.mu.Unlock()
		giveUp := time.Now().Add(maxRetryTime)
		for try := 0; try < maxTries && time.Now().Before(giveUp); try++ {
			a, err := tryDo(s.client, http.MethodPost, s.endpoint, formContent, body)
			kind := ""
			switch {
			case err != nil && errors.Is(err, syscall.ECONNREFUSED):
				kind = "connection refused (edge down)"
			case err != nil:
				kind = "connection cut"
				if os.Getenv("E2E_DEBUG") != "" {
					s.t.Logf("%s try %d: %v", time.Now().Format("15:04:05.000"), try, err)
				}
			case a.Status < 200 || a.Status > 299:
				kind = "HTTP " + strconv.Itoa(a.Status)
				if os.Getenv("E2E_DEBUG") != "" {
					s.t.Logf("%s try %d: %s %v", time.Now().Format("15:04:05.000"), try, a, a.Header)
				}
			}
			s.mu.Lock()
			s.attempts++
			if kind == "" {
				s.accepted[body] = true
				s.at[body] = time.Now()
			} else {
				s.errs[kind]++
			}
			s.mu.Unlock()
			if kind == "" {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// Under a steady load of signed notifications the edge is killed with
// SIGKILL at random moments and restarted at once on the same ports and
// store. Afterwards every notification the sender saw accepted has reached
// the script and the secondary destination at least once.
func TestLoadCrashKill9LosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash test under load (about 30s)")
	}
	php := startPHP(t)
	dir := t.TempDir()
	destPort, edgePort := testutil.FreePort(t), testutil.FreePort(t)
	dest := newSink(t, dir, destPort)
	cfg := loadConfig(dir+"/store", fmt.Sprintf("https://127.0.0.1:%d/collect", destPort), dest.caFile, legacyRoot(t), php.addr, edgePort)
	env := []string{"E2E_ITNS_SECRET=" + itnsSecret, "E2E_DB_KEY=" + e2eDBKey}

	const (
		senders  = 4
		duration = 24 * time.Second
		cycles   = 5
	)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("E2E_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	rng := rand.New(rand.NewPCG(seed, seed))
	t.Logf("kill schedule seed %d (set E2E_SEED to repeat it)", seed)
	// Kill moments: random, at least 1.5s apart (so that each restart sees
	// load again), within the load period.
	var kills []time.Duration
	slot := (duration - 2*time.Second) / cycles
	for i := 0; i < cycles; i++ {
		kills = append(kills, time.Second+time.Duration(i)*slot+time.Duration(rng.Int64N(int64(slot-1500*time.Millisecond))))
	}

	procs := []*caddyProc{startCaddy(t, dir, cfg, env...)}
	sender := newLoadSender(t, fmt.Sprintf("http://127.0.0.1:%d/itns.php", edgePort))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); sender.run(stop) }()
	}
	start := time.Now()
	var downtime time.Duration
	for i, at := range kills {
		time.Sleep(time.Until(start.Add(at)))
		sender.mu.Lock()
		before := len(sender.accepted)
		sender.mu.Unlock()
		procs[len(procs)-1].kill9()
		down := time.Now()
		procs = append(procs, startCaddy(t, dir, cfg, env...))
		downtime += time.Since(down)
		t.Logf("cycle %d: kill -9 at %s (%d accepted so far), back after %s", i+1, at.Round(time.Millisecond), before, time.Since(down).Round(time.Millisecond))
	}
	time.Sleep(time.Until(start.Add(duration)))
	close(stop)
	wg.Wait()
	loadTime := time.Since(start)

	sender.mu.Lock()
	sent, accepted, attempts := len(sender.sent), len(sender.accepted), sender.attempts
	errs := fmt.Sprint(sender.errs)
	sender.mu.Unlock()
	if accepted == 0 {
		t.Fatal("no notification was accepted")
	}

	// Drain: every accepted notification at the destination.
	drainStart := time.Now()
	testutil.WaitFor(t, "every accepted notification at DIN 1001", 2*time.Minute, func() bool {
		bodies, _ := dest.received()
		for b := range sender.accepted {
			if bodies[b] == 0 {
				return false
			}
		}
		return true
	})
	// Drained: nothing left pending in the store of the last edge.
	last := procs[len(procs)-1]
	testutil.WaitFor(t, "queue depth of DIN 1001 at 0", 30*time.Second, func() bool {
		v, ok := last.metrics(t)[`caddy_postback_queue_depth{din="1001"}`]
		return ok && v == 0
	})
	drain := time.Since(drainStart)

	bodies, total := dest.received()
	for b := range bodies {
		if !sender.sent[b] {
			t.Errorf("DIN 1001 got a body nobody sent: %q", b)
		}
	}
	// The primary: itns.php ran for every accepted notification.
	seen := map[string]int{}
	for _, r := range php.records(t, "itns") {
		seen[fmt.Sprint(r["receipt"])]++
	}
	phpDup := 0
	for _, n := range seen {
		phpDup += n - 1
	}
	for b := range sender.accepted {
		receipt := b[strings.Index(b, "tranreceipt=")+len("tranreceipt=") : strings.Index(b, "&prodid=")]
		if seen[receipt] == 0 {
			t.Errorf("notification %s was accepted but itns.php never saw it", receipt)
		}
	}
	for i, p := range procs {
		if strings.Contains(p.logs.String(), "panic:") {
			t.Errorf("edge run %d panicked:\n%s", i+1, p.logs.String())
		}
	}
	delivered := 0
	for b := range sender.accepted {
		if bodies[b] > 0 {
			delivered++
		}
	}
	t.Logf("sender failures by kind: %s", errs)
	figures(t, "crash: sent=%d requests=%d accepted=%d delivered=%d destination_requests=%d duplicates=%d php_duplicates=%d crash_cycles=%d load=%s edge_restart_total=%s drain=%s rate=%.0f/s seed=%d",
		sent, attempts, accepted, delivered, total, total-len(bodies), phpDup, len(kills),
		loadTime.Round(time.Millisecond), downtime.Round(time.Millisecond), drain.Round(time.Millisecond),
		float64(accepted)/loadTime.Seconds(), seed)
}
