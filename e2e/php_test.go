package e2e

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// itnsShopsConfig is a merchant with two shops in front of the unchanged
// itns.php: AffiliCon (no prefix; the handlers answer refusals themselves
// with deny_body) on port affPort, and ClickBank-compatible (prefix c;
// refusals shaped by handle_errors) on port cbPort. Both copy every
// accepted notification to DIN 1001 over HTTPS.
func itnsShopsConfig(storeDir, destURL, caFile, root, php string, affPort, cbPort int) string {
	return caddyfile{
		store: storeDir,
		dests: []destination{{din: "1001", url: destURL, ca: caFile,
			opts: "item_code ITNS\ntimeout 5s\nretry_schedule 0s 200ms 500ms 1s 2s"}},
		sites: []site{
			{port: affPort, root: root, body: itnsRoute(`methods POST
allow 127.0.0.1 ::1
deny_body "DENIED {postback.deny_reason}\n"`, `deny_body "INVALID {postback.deny_reason}\n"`, "1001", php) + `
respond "not found" 404`},
			{port: cbPort, root: root, body: itnsRoute("allow 127.0.0.1 ::1", "prefix c", "1001", php) + `
handle_errors {
	respond "refused: {postback.deny_reason}" {err.status_code}
}`},
		},
	}.String()
}

// Signed ITNS notifications, without a prefix (AffiliCon) and with prefix c
// (ClickBank-compatible), reach the unchanged itns.php with every value
// intact and are copied to the HTTPS destination byte for byte; forged,
// unsigned, stale, GET and unlisted-sender requests never reach PHP or the
// destination, and each gets its status and body.
func TestPHPITNSSignedAndRefused(t *testing.T) {
	php := startPHP(t)
	requireSecondLoopback(t)
	dir := t.TempDir()
	dest := newSink(t, dir, 0)
	affPort, cbPort := testutil.FreePort(t), testutil.FreePort(t)
	cfg := itnsShopsConfig(dir+"/store", dest.srv.URL+"/collect", dest.caFile, legacyRoot(t), php.addr, affPort, cbPort)
	startCaddy(t, dir, cfg, "E2E_ITNS_SECRET="+itnsSecret)

	client := &http.Client{Timeout: 15 * time.Second}
	stranger := clientFrom("127.0.0.2")
	accepted := map[string]bool{} // bodies that must reach PHP and DIN 1001
	refusals := 0

	shops := []struct {
		name, prefix string
		port         int
		cli          bool                       // sign with `caddy postback sign`
		refusal      func(reason string) string // the body of a refusal
	}{
		{"affilicon", "", affPort, false, func(r string) string {
			if r == "ip" || r == "method" {
				return "DENIED " + r + "\n" // postback_filter's deny_body
			}
			return "INVALID " + r + "\n" // itns_verify's deny_body
		}},
		{"clickbank", "c", cbPort, true, func(r string) string { return "refused: " + r }},
	}
	for _, shop := range shops {
		t.Run(shop.name, func(t *testing.T) {
			endpoint := fmt.Sprintf("http://127.0.0.1:%d/itns.php", shop.port)
			sign := func(fields []handlers.Field) string {
				if shop.cli {
					return signWithCLI(t, itnsSecret, shop.prefix, fields)
				}
				return signITNS(t, itnsSecret, shop.prefix, fields)
			}
			p := shop.prefix

			// Genuine notifications: OK from the script, which saw every value.
			var sent [][]handlers.Field
			for i := 0; i < 3; i++ {
				fields := itnsFields(p, fmt.Sprintf("%s-OK-%d", shop.name, i), time.Now())
				body := sign(fields)
				a := do(t, client, http.MethodPost, endpoint, formContent, body)
				if a.Status != http.StatusOK || a.Body != "OK\n" {
					t.Fatalf("signed notification %d: got %s, want 200 \"OK\\n\"", i, a)
				}
				accepted[body] = true
				sent = append(sent, fields)
			}
			recs := php.records(t, "itns")
			var mine []map[string]any
			for _, r := range recs {
				if strings.HasPrefix(fmt.Sprint(r["receipt"]), shop.name+"-") {
					mine = append(mine, r)
				}
			}
			if len(mine) != len(sent) {
				t.Fatalf("itns.php ran %d times for this shop, want %d", len(mine), len(sent))
			}
			for i, fields := range sent {
				want := map[string]string{}
				for _, f := range fields {
					want[strings.TrimPrefix(f.Name, p)] = f.Value
				}
				got := mine[i]
				for field, key := range map[string]string{"transaction": "transaction", "receipt": "tranreceipt", "prodid": "prodid", "email": "custemail", "name": "custfullname"} {
					if got[field] != want[key] {
						t.Errorf("itns.php saw %s = %q, sender sent %q", field, got[field], want[key])
					}
				}
				if v, _ := got["verify"].(string); len(v) != 8 {
					t.Errorf("itns.php saw verify = %q, want the 8-character signature", got["verify"])
				}
			}

			calls := php.calls(t, "itns")
			refuse := func(what string, c *http.Client, method, body string, status int, reason string) {
				t.Helper()
				u := endpoint
				if method == http.MethodGet {
					u += "?" + body
					body = ""
				}
				a := do(t, c, method, u, formContent, body)
				refusals++
				if a.Status != status || a.Body != shop.refusal(reason) {
					t.Errorf("%s: got %s, want %d %q", what, a, status, shop.refusal(reason))
				}
				if reason == "method" && a.Header.Get("Allow") != "POST" {
					t.Errorf("%s: Allow = %q, want POST", what, a.Header.Get("Allow"))
				}
				if reason == "ip" && a.Header.Get("Allow") != "" {
					t.Errorf("%s: an unlisted sender learnt Allow: %q", what, a.Header.Get("Allow"))
				}
				if n := php.calls(t, "itns"); n != calls {
					t.Errorf("%s reached itns.php (%d calls, want %d)", what, n, calls)
				}
			}

			good := sign(itnsFields(p, shop.name+"-REFUSED", time.Now()))
			forged := strings.Replace(good, p+"transamount=19.95", p+"transamount=0.01", 1)
			if forged == good {
				t.Fatal("test bug: forging changed nothing")
			}
			refuse("forged amount", client, http.MethodPost, forged, http.StatusForbidden, "signature_mismatch")
			unsigned := good[:strings.LastIndex(good, "&"+p+"verify=")]
			refuse("unsigned", client, http.MethodPost, unsigned, http.StatusForbidden, "signature_missing")
			stale := sign(itnsFields(p, shop.name+"-STALE", time.Now().Add(-time.Hour)))
			refuse("stale (1h old)", client, http.MethodPost, stale, http.StatusForbidden, "stale")
			future := sign(itnsFields(p, shop.name+"-FUTURE", time.Now().Add(time.Hour)))
			refuse("from the future", client, http.MethodPost, future, http.StatusForbidden, "future")
			refuse("GET", client, http.MethodGet, good, http.StatusMethodNotAllowed, "method")
			refuse("unlisted sender 127.0.0.2", stranger, http.MethodPost, good, http.StatusForbidden, "ip")
			refuse("unlisted sender 127.0.0.2, GET", stranger, http.MethodGet, good, http.StatusForbidden, "ip")
		})
	}

	// The destination gets the accepted notifications, byte for byte, and
	// nothing else.
	testutil.WaitFor(t, "the accepted notifications at DIN 1001", 30*time.Second, func() bool {
		bodies, _ := dest.received()
		for b := range accepted {
			if bodies[b] == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(500 * time.Millisecond) // a refused copy would have arrived by now
	for _, r := range dest.requests() {
		if !accepted[r.Body] {
			t.Errorf("DIN 1001 got a body that was refused at the edge: %q", r.Body)
		}
		if r.Method != http.MethodPost || r.DIN != "1001" || r.ItemCode != "ITNS" || r.ContentType != formContent || r.ID == "" {
			t.Errorf("DIN 1001 request: method %s, X-Postback-Din %q, item code %q, content type %q, id %q",
				r.Method, r.DIN, r.ItemCode, r.ContentType, r.ID)
		}
	}
	if n := php.calls(t, "itns"); n != len(accepted) {
		t.Errorf("itns.php ran %d times, want %d (the accepted notifications only)", n, len(accepted))
	}
	figures(t, "php-itns: accepted=%d refused=%d php_calls=%d destination_requests=%d",
		len(accepted), refusals, php.calls(t, "itns"), len(dest.requests()))
}

// natsGatewayConfig puts process_gateway.php behind the filter the way
// docs/postback_filter.md shows: only 127.0.0.1 is a listed NATS sender, and
// a refusal answers in the gateway's own words.
func natsGatewayConfig(storeDir, destURL, caFile, root, php string, port int) string {
	return caddyfile{
		store: storeDir,
		dests: []destination{{din: "1001", url: destURL, ca: caFile, opts: "retry_schedule 0s 200ms 500ms"}},
		sites: []site{{port: port, root: root, body: `route /signup/process_gateway.php {
	map {postback.deny_reason} {nats_error} {
		ip "NOT ALLOWED IP"
		default "UNSUPPORTED REQUEST"
	}
	postback_filter {
		methods POST
		allow 127.0.0.1
		max_body 64KiB
		deny_status 200
		deny_body "SALE DECLINED\n{nats_error}\n"
	}
	secondary_post 1001
	php_fastcgi ` + php + `
}`}},
	}.String()
}

// The NATS process gateway: a sender that is not listed gets SALE DECLINED /
// NOT ALLOWED IP from the edge, and the script never runs; a listed sender
// gets the script's own two lines, unchanged, including the script's own
// declines.
func TestPHPNATSGateway(t *testing.T) {
	php := startPHP(t)
	requireSecondLoopback(t)
	dir := t.TempDir()
	dest := newSink(t, dir, 0)
	port := testutil.FreePort(t)
	startCaddy(t, dir, natsGatewayConfig(dir+"/store", dest.srv.URL+"/collect", dest.caFile, legacyRoot(t), php.addr, port))
	endpoint := fmt.Sprintf("http://127.0.0.1:%d/signup/process_gateway.php", port)

	sale := func(user string) string {
		return url.Values{
			"xs_nats": {"ref-" + user}, "username": {user}, "password": {"s3cret&pass"},
			"email": {user + "@example.com"}, "cc": {"4111111111111111"}, "cvv": {"123"},
		}.Encode()
	}
	client := &http.Client{Timeout: 15 * time.Second}
	stranger := clientFrom("127.0.0.2")

	// Unlisted sender: declined by the edge, in the gateway's words.
	for _, method := range []string{http.MethodPost, http.MethodGet} {
		body := sale("mallory")
		u := endpoint
		if method == http.MethodGet {
			u, body = u+"?"+body, ""
		}
		a := do(t, stranger, method, u, formContent, body)
		if a.Status != http.StatusOK || a.Body != "SALE DECLINED\nNOT ALLOWED IP\n" {
			t.Errorf("unlisted %s: got %s, want 200 \"SALE DECLINED\\nNOT ALLOWED IP\\n\"", method, a)
		}
		if a.Header.Get("Allow") != "" {
			t.Errorf("unlisted %s: Allow %q reveals the endpoint", method, a.Header.Get("Allow"))
		}
	}
	if n := php.calls(t, "process_gateway"); n != 0 {
		t.Fatalf("process_gateway.php ran %d times for an unlisted sender", n)
	}

	// Listed sender: the script's answers, unchanged.
	var mirrored []string
	for i, user := range []string{"alice", "bob"} {
		body := sale(user)
		a := do(t, client, http.MethodPost, endpoint, formContent, body)
		recs := php.records(t, "process_gateway")
		if len(recs) != i+1 {
			t.Fatalf("process_gateway.php ran %d times, want %d", len(recs), i+1)
		}
		want := fmt.Sprintf("SALE OK\n%v\n", recs[i]["member_id"])
		if a.Status != http.StatusOK || a.Body != want || recs[i]["username"] != user {
			t.Errorf("listed sale %s: got %s, want 200 %q (script record %v)", user, a, want, recs[i])
		}
		if ct := a.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
			t.Errorf("listed sale: Content-Type %q, want the script's text/plain", ct)
		}
		mirrored = append(mirrored, body)
	}
	// The script's own decline passes through unchanged too (it answers
	// itself, without a record).
	incomplete := url.Values{"xs_nats": {"x"}, "username": {"carol"}, "password": {"p"}, "email": {"c@example.com"}, "cc": {"4111111111111111"}}.Encode()
	if a := do(t, client, http.MethodPost, endpoint, formContent, incomplete); a.Status != http.StatusOK || a.Body != "SALE DECLINED\nMISSING CVV\n" {
		t.Errorf("script's own decline: got %s", a)
	}
	mirrored = append(mirrored, incomplete)
	// GET from a listed sender: refused by the edge (card data must not be
	// in a URL), worded as the gateway words it.
	a := do(t, client, http.MethodGet, endpoint+"?"+sale("dave"), "", "")
	if a.Status != http.StatusOK || a.Body != "SALE DECLINED\nUNSUPPORTED REQUEST\n" || a.Header.Get("Allow") != "POST" {
		t.Errorf("listed GET: got %s Allow %q, want 200 \"SALE DECLINED\\nUNSUPPORTED REQUEST\\n\" with Allow: POST", a, a.Header.Get("Allow"))
	}
	if n := php.calls(t, "process_gateway"); n != 2 {
		t.Errorf("process_gateway.php recorded %d sales, want 2", n)
	}

	// What passed the edge is mirrored to DIN 1001; what it refused is not.
	testutil.WaitFor(t, "the gateway posts at DIN 1001", 30*time.Second, func() bool {
		bodies, _ := dest.received()
		for _, b := range mirrored {
			if bodies[b] == 0 {
				return false
			}
		}
		return true
	})
	time.Sleep(300 * time.Millisecond)
	if bodies, total := dest.received(); total != len(mirrored) || len(bodies) != len(mirrored) {
		t.Errorf("DIN 1001 got %d requests (%d distinct), want %d", total, len(bodies), len(mirrored))
	}
	figures(t, "php-nats: unlisted_declined=2 listed_sales=2 script_declines=1 listed_get_refused=1 php_sales=%d destination_requests=%d",
		php.calls(t, "process_gateway"), len(dest.requests()))
}

// replayConfig is itns.php behind itns_verify with dedupe; storage and
// ports are fixed so that the edge can be restarted on the same store.
func replayConfig(storeDir, destURL, caFile, root, php string, port int) string {
	return caddyfile{
		store: storeDir,
		dests: []destination{{din: "1001", url: destURL, ca: caFile, opts: "retry_schedule 0s 200ms 500ms"}},
		sites: []site{{port: port, root: root, body: itnsRoute("allow 127.0.0.1", "dedupe 1h", "1001", php)}},
	}.String()
}

// A notification sent twice (in sequence, with its fields reordered, at the
// same moment, and again after a kill -9 and restart) reaches PHP and the
// destination once; every repeat gets the first answer.
func TestPHPReplayReachesScriptOnce(t *testing.T) {
	php := startPHP(t)
	dir := t.TempDir()
	dest := newSink(t, dir, 0)
	port := testutil.FreePort(t)
	cfg := replayConfig(dir+"/store", dest.srv.URL+"/collect", dest.caFile, legacyRoot(t), php.addr, port)
	env := "E2E_ITNS_SECRET=" + itnsSecret
	edge := startCaddy(t, dir, cfg, env)
	endpoint := fmt.Sprintf("http://127.0.0.1:%d/itns.php", port)
	client := &http.Client{Timeout: 30 * time.Second}

	same := func(what string, a, first answer) {
		t.Helper()
		if a.Status != first.Status || a.Body != first.Body || a.Header.Get("Content-Type") != first.Header.Get("Content-Type") {
			t.Errorf("%s: got %s (%s), first answer was %s (%s)", what, a, a.Header.Get("Content-Type"), first, first.Header.Get("Content-Type"))
		}
	}

	// In sequence.
	fields := itnsFields("", "REPLAY-1", time.Now())
	body := signITNS(t, itnsSecret, "", fields)
	first := do(t, client, http.MethodPost, endpoint, formContent, body)
	if first.Status != http.StatusOK || first.Body != "OK\n" {
		t.Fatalf("first copy: %s", first)
	}
	same("second copy", do(t, client, http.MethodPost, endpoint, formContent, body), first)
	// The same fields in another order are the same notification.
	parts := strings.Split(body, "&")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	same("reordered copy", do(t, client, http.MethodPost, endpoint, formContent, strings.Join(parts, "&")), first)
	if n := php.calls(t, "itns"); n != 1 {
		t.Fatalf("itns.php ran %d times for one notification sent three times", n)
	}

	// At the same moment: one goes through, the others wait for its answer.
	body2 := signITNS(t, itnsSecret, "", itnsFields("", "REPLAY-2", time.Now()))
	const copies = 5
	answers := make([]answer, copies)
	var wg sync.WaitGroup
	for i := range answers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			a, err := tryDo(client, http.MethodPost, endpoint, formContent, body2)
			if err != nil {
				t.Errorf("concurrent copy %d: %v", i, err)
			}
			answers[i] = a
		}(i)
	}
	wg.Wait()
	for i := range answers {
		same(fmt.Sprintf("concurrent copy %d", i), answers[i], first)
	}
	if n := php.calls(t, "itns"); n != 2 {
		t.Fatalf("itns.php ran %d times for two notifications (the second sent %d times at once)", n, copies)
	}
	if n := edge.metric(t, `caddy_postback_replays_total{outcome="answered"}`); n < 2+copies-1 {
		t.Errorf("caddy_postback_replays_total{outcome=\"answered\"} = %v, want >= %d", n, 2+copies-1)
	}

	// After a crash: the record is on disk, the replay is still answered.
	testutil.WaitFor(t, "both notifications at DIN 1001", 30*time.Second, func() bool {
		b, _ := dest.received()
		return b[body] > 0 && b[body2] > 0
	})
	edge.kill9()
	startCaddy(t, dir, cfg, env)
	same("copy after kill -9 and restart", do(t, client, http.MethodPost, endpoint, formContent, body), first)
	if n := php.calls(t, "itns"); n != 2 {
		t.Errorf("itns.php ran %d times after the restart, want 2", n)
	}
	time.Sleep(500 * time.Millisecond)
	// One delivery per notification: no replay made a copy of its own. The
	// kill -9 may fall between DIN 1001's answer and the edge's record of it;
	// that copy is then sent again after the restart with the same
	// X-Postback-Id (at-least-once), which a destination drops by that id.
	_, total := dest.received()
	ids := dest.idsByBody()
	if len(ids) != 2 || len(ids[body]) != 1 || len(ids[body2]) != 1 {
		t.Errorf("DIN 1001 got %d requests, X-Postback-Ids by body %v; want one delivery per notification", total, ids)
	}
	figures(t, "php-replay: notifications=2 copies_sent=%d php_calls=%d destination_requests=%d",
		3+copies+1, php.calls(t, "itns"), total)
}
