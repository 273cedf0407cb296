package e2e

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/handlers"
	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// Markers no log line, error, admin answer, report page or store file may
// ever show in clear. Each is distinctive enough to grep for.
var secretMarkers = []string{
	"5500005555555559",          // card number
	"Xy-secret-Pa55",            // password
	"private.buyer@example.net", // e-mail address
	"private.buyer%40example.net",
	"864209", // a member PIN, sensitive only through `redact member_pin`
}

// cvvMarkers: a three-digit CVV is too short to grep alone; these are the
// forms it would take in a log line or a record.
var cvvMarkers = []string{"cvv=913", `"913"`, "cvv\":913", "913&"}

func secretsConfig(store, key, spool, pubKey, ca string, dead [3]int, port int) string {
	return caddyfile{
		store:    store,
		postback: "encryption_key " + key + "\nredact member_pin",
		dests: []destination{
			{din: "1001", url: fmt.Sprintf("https://127.0.0.1:%d/collect", dead[0]), ca: ca,
				opts: "retry_schedule 0s 100ms 100ms\npgp_key " + pubKey + "\nspool_dir " + spool},
			{din: "1002", url: fmt.Sprintf("https://127.0.0.1:%d/collect?partner=x", dead[1]), ca: ca,
				opts: "method GET\nretry_schedule 0s 100ms"},
			{din: "1003", url: fmt.Sprintf("https://127.0.0.1:%d/collect", dead[2]), ca: ca, opts: "retry_schedule 0s 1h"},
		},
		sites: []site{{port: port, body: `route /signup/process_gateway.php {
	postback_filter {
		allow 127.0.0.1
	}
	secondary_post 1001 1002 1003
	respond "SALE OK
100001
"
}
route /denied/process_gateway.php {
	postback_filter {
		allow 203.0.113.10
		deny_status 200
		deny_body "SALE DECLINED\nNOT ALLOWED IP\n"
	}
	respond "never"
}
route /itns.php {
	postback_filter {
		allow 127.0.0.1
		max_body 4KiB
	}
	itns_verify {
		secret s3cr3t-itns
		dedupe 1h
	}
	secondary_post 1001 1002 1003
	respond "OK"
}
route /signup/process_extended.php {
	postback_filter {
		methods GET POST
		allow 127.0.0.1
	}
	secondary_post 1001 1002 1003
	respond "OK"
}
route /ecsuite/* {
	postback_filter {
		allow 127.0.0.1
	}
	secondary_post 1001 1002 1003
	respond "APPROVED"
}
route /report/* {
	postback_report /report
}`}},
	}.String()
}

// TestNothingInClear posts card data, CVVs and passwords through every
// handler, accepted and refused, into destinations that fail; then the spool
// files must decrypt with GnuPG to exactly what was posted, and no log line,
// admin API answer, report page or file of the encrypted store may hold the
// values in clear.
func TestNothingInClear(t *testing.T) {
	partner := newGPGPartner(t)
	dir := t.TempDir()
	store, spool := filepath.Join(dir, "store"), filepath.Join(dir, "spool")
	key := hex.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	dead := [3]int{testutil.FreePort(t), testutil.FreePort(t), testutil.FreePort(t)}
	port := testutil.FreePort(t)
	edge := startCaddy(t, dir, secretsConfig(store, key, spool, partner.pubKey, testutil.HTTPTestCA(t, dir), dead, port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	client := &http.Client{Timeout: 10 * time.Second}
	const form = "application/x-www-form-urlencoded"

	gateway := url.Values{"xs_nats": {"ref1"}, "username": {"anna"}, "password": {"Xy-secret-Pa55"},
		"email": {"private.buyer@example.net"}, "cc": {"5500005555555559"}, "cvv": {"913"}, "member_pin": {"864209"}}.Encode()
	itns := signITNS(t, "s3cr3t-itns", "", []handlers.Field{
		{Name: "transaction", Value: "SALE"}, {Name: "tranreceipt", Value: "R1"},
		{Name: "custemail", Value: "private.buyer@example.net"}, {Name: "ccnum", Value: "5500005555555559"},
		{Name: "password", Value: "Xy-secret-Pa55"}, {Name: "transtime", Value: fmt.Sprint(time.Now().Unix())},
	})
	extendedQuery := "extended_id=demo&action=SALE&transid=T9&username=anna&password=Xy-secret-Pa55&email=private.buyer%40example.net"
	approval := url.Values{"username": {"anna"}, "password": {"Xy-secret-Pa55"}, "email": {"private.buyer@example.net"},
		"subscription_id": {"1000000001"}, "member_pin": {"864209"}}.Encode()

	accepted := []struct{ method, path, body string }{
		{"POST", "/signup/process_gateway.php", gateway},
		{"POST", "/itns.php", itns},
		{"GET", "/signup/process_extended.php?" + extendedQuery, ""},
		{"POST", "/ecsuite/approval.php", approval},
	}
	for _, r := range accepted {
		if a := do(t, client, r.method, base+r.path, form, r.body); a.Status != http.StatusOK {
			t.Fatalf("%s %s: %s", r.method, r.path, a)
		}
	}
	// The same ITNS notification again is a replay, answered from the first.
	if a := do(t, client, "POST", base+"/itns.php", form, itns); a.Status != http.StatusOK || a.Body != "OK" {
		t.Errorf("replay: %s", a)
	}
	// Refusals that carry the same data.
	refused := []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/denied/process_gateway.php", gateway, http.StatusOK},                    // NOT ALLOWED IP
		{"GET", "/signup/process_gateway.php?" + gateway, "", http.StatusMethodNotAllowed}, // GET where POST only
		{"POST", "/itns.php", strings.Replace(itns, "R1", "R2", 1), http.StatusForbidden},  // forged
		{"POST", "/itns.php", itns + "&" + itns, http.StatusBadRequest},                    // duplicate fields
		{"POST", "/itns.php", itns + "&pad=" + strings.Repeat("x", 5000), http.StatusRequestEntityTooLarge},
		{"POST", "/itns.php", "password=Xy-secret-Pa55&cc=5500005555555559&bad=%zz", http.StatusBadRequest},
	}
	for _, r := range refused {
		if a := do(t, client, r.method, base+r.path, form, r.body); a.Status != r.status {
			t.Errorf("%s %s: %s, want %d", r.method, r.path, a, r.status)
		}
	}

	// 1001 spools after its schedule, 1002 fails, 1003 stays pending.
	n := len(accepted)
	testutil.WaitFor(t, "1001 spooled and 1002 failed", 30*time.Second, func() bool {
		var stats struct {
			Destinations []struct {
				DIN                      string `json:"din"`
				Pending, Spooled, Failed int
			} `json:"destinations"`
		}
		if err := getJSON(client, edge.adminURL("/postback/stats"), &stats); err != nil {
			return false
		}
		d := map[string][3]int{}
		for _, s := range stats.Destinations {
			d[s.DIN] = [3]int{s.Pending, s.Spooled, s.Failed}
		}
		return d["1001"][1] == n && d["1002"][2] == n && d["1003"][0] == n
	})

	// The encrypted store holds none of the values, write-ahead files
	// included, while deliveries are pending.
	scanTree(t, "store file", store, secretMarkers)

	// Every spool file decrypts to exactly one posted payload.
	want := []string{gateway, itns, extendedQuery, approval}
	var got []string
	files, _ := filepath.Glob(filepath.Join(spool, "1001-*.asc"))
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("spool file %s: mode %v, err %v", f, fi.Mode().Perm(), err)
		}
		plain, _ := partner.Decrypt(t, f)
		got = append(got, string(plain))
	}
	sort.Strings(got)
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("spool plaintexts differ from the posted payloads:\n got %q\nwant %q", got, want)
	}
	scanTree(t, "spool file", spool, secretMarkers)

	// The admin API and the report page: listings, details, stats.
	var pages []string
	for _, path := range []string{"/postback/stats", "/postback/deliveries?limit=100", "/postback/deliveries?state=failed"} {
		pages = append(pages, getText(t, client, edge.adminURL(path)))
	}
	var list struct {
		Deliveries []struct {
			ID string `json:"id"`
		} `json:"deliveries"`
	}
	if err := json.Unmarshal([]byte(pages[1]), &list); err != nil || len(list.Deliveries) != 3*n {
		t.Fatalf("deliveries list: %d entries, err %v", len(list.Deliveries), err)
	}
	for _, d := range list.Deliveries {
		pages = append(pages, getText(t, client, edge.adminURL("/postback/deliveries/"+d.ID)))
		pages = append(pages, getText(t, client, base+"/report/deliveries/"+d.ID))
	}
	pages = append(pages, getText(t, client, base+"/report/"))
	for i, p := range pages {
		for _, m := range append(secretMarkers, cvvMarkers...) {
			if strings.Contains(p, m) {
				t.Errorf("admin/report answer %d shows %q", i, m)
			}
		}
	}

	// Logs: everything the process wrote, through a graceful stop.
	edge.stop()
	logs := edge.logs.String()
	if !strings.Contains(logs, "request denied") || !strings.Contains(logs, "spool") {
		t.Errorf("the log lacks the denials or the spool lines; is it the right log?\n%.2000s", logs)
	}
	for _, m := range append(secretMarkers, cvvMarkers...) {
		if strings.Contains(logs, m) {
			i := strings.Index(logs, m)
			t.Errorf("log shows %q: …%s…", m, logs[max(0, i-200):min(len(logs), i+100)])
		}
	}
	scanTree(t, "store file after stop", store, secretMarkers)
}

// scanTree fails the test if any file below root contains a marker.
func scanTree(t *testing.T, what, root string, markers []string) {
	t.Helper()
	files := 0
	err := filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, m := range markers {
			if bytes.Contains(data, []byte(m)) {
				t.Errorf("%s %s holds %q in clear", what, path, m)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Errorf("no %s under %s to scan", what, root)
	}
}

func getJSON(client *http.Client, u string, v any) error {
	resp, err := client.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func getText(t *testing.T, client *http.Client, u string) string {
	t.Helper()
	resp, err := client.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", u, resp.Status, b)
	}
	return string(b)
}
