package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
	"github.com/postbackedge/caddy-postback/report"
)

// readmeVerifyCopy is the partner's PHP check of a signed copy, exactly as
// the README shows it under "Signed copies".
func readmeVerifyCopy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- verify_copy.php -->\n```php\n")
	script, _, closed := strings.Cut(rest, "```\n")
	if !ok || !closed {
		t.Fatal("README: no verify_copy.php block")
	}
	return script
}

// The README's verify_copy.php, behind php_fastcgi as a partner runs it,
// accepts the copies of a destination signed with its secret and refuses
// those of one signed with another (401, so they fail on their schedule).
func TestPHPVerifiesSignedCopy(t *testing.T) {
	php := startPHP(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "partner")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "verify_copy.php"), []byte(readmeVerifyCopy(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	edgePort, partnerPort := testutil.FreePort(t), testutil.FreePort(t)
	partner := fmt.Sprintf("http://127.0.0.1:%d/verify_copy.php", partnerPort)
	cfg := caddyfile{
		store: filepath.Join(dir, "store"),
		dests: []destination{
			{din: "2001", url: partner, opts: "insecure_http\nretry_schedule 0s\nsign_secret {env.E2E_SIGN_SECRET}"},
			{din: "2002", url: partner, opts: "insecure_http\nretry_schedule 0s\nsign_secret {env.E2E_OTHER_SECRET}"},
		},
		sites: []site{
			{port: edgePort, body: "route /ipn.php {\n\tsecondary_post 2001 2002\n\trespond \"OK\"\n}"},
			{port: partnerPort, root: root, body: "php_fastcgi " + php.addr + " {\n\tenv POSTBACK_SIGN_SECRET {env.E2E_SIGN_SECRET}\n}"},
		},
	}.String()
	edge := startCaddy(t, dir, cfg, "E2E_SIGN_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "E2E_OTHER_SECRET=not the partner's secret at all")
	client := &http.Client{Timeout: 15 * time.Second}
	body := "sale=1&name=J%C3%BCrgen+%E2%80%93+M&email=jm%40example.com&empty="
	if a := do(t, client, http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/ipn.php", edgePort), "application/x-www-form-urlencoded", body); a.Status != 200 {
		t.Fatalf("POST: %s", a)
	}
	var st report.Stats
	testutil.WaitFor(t, "2001 delivered, 2002 failed", 30*time.Second, func() bool {
		if err := getJSON(client, edge.adminURL("/postback/stats"), &st); err != nil {
			return false
		}
		return dinStats(st, "2001").Delivered == 1 && dinStats(st, "2002").Failed == 1
	})
	if e := dinStats(st, "2002").LastError; e == nil || !strings.Contains(e.Message, "401") {
		t.Errorf("2002's copy refused otherwise than by the script's 401: %+v", e)
	}
}

func dinStats(st report.Stats, din string) report.DestinationStats {
	for _, d := range st.Destinations {
		if d.DIN == din {
			return d
		}
	}
	return report.DestinationStats{}
}
