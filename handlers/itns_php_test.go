package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

// runPHP runs one of the testdata/php scripts with job as JSON on stdin and
// decodes its JSON output into out.
func runPHP(t *testing.T, php, script string, job, out any) {
	t.Helper()
	in, err := json.Marshal(job)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(php, "-d", "display_errors=stderr", "-d", "max_input_vars=10000", filepath.Join("testdata", "php", script))
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("php %s: %v\n%s", script, err, stderr.String())
	}
	if stderr.Len() > 0 {
		t.Fatalf("php %s wrote to stderr:\n%s", script, stderr.String())
	}
	if err := json.Unmarshal(stdout, out); err != nil {
		t.Fatalf("php %s output: %v\n%.500s", script, err, stdout)
	}
}

// itnsNames are the AffiliCon ITNS fields plus the ClickBank 1.0 ones.
var itnsNames = strings.Fields(`custfullname custfirstname custlastname custzip custcc custshipto
	custaddr1 custaddr2 custcity custshippingzip custshippingcountry custemail custphone prodid
	prodtitle prodtype transaction billno aboid aboend transaffiliate accountammount orderamount
	transpaymentmethod currency transvendor tranreceipt rfndreceipt subid data1 data2 custom
	transtime orderlanguage proditem taxamount shippingamount transrole noticeversion
	custname custstate transreceipt transpublisher transamount affitid vendthru`)

// edgeValues are the values the design asks to cover, mixed into
// realistic ones.
var edgeValues = []string{
	"", " ", " leading", "trailing ", "  both  ", "john@example.com", "a%40b", "%40",
	"Tom & Jerry", "a=b&c=d", "x+y", "100%", "semi;colon", "pipe|inside|", "|",
	"Müller", "Jürgen Ärger Öl Süß", "Guide – 2nd edition", "–", "日本語", "emoji 😀",
	"quote\" and 'single'", `back\slash`, "tab\there", "line\nbreak", "crlf\r\nend",
	"SALE", "RFND", "CGBK", "VISA", "STANDARD", "RECURRING", "1700000000", "0", "1000",
	"12345AbC", "https://shop.example/?a=1&b=2", "[brackets]", "{braces}", "~tilde", "*",
}

// genNotifications builds n notifications of 5 to 40 distinct fields.
func genNotifications(seed uint64, n int, prefix string) [][][2]string {
	rng := rand.New(rand.NewPCG(seed, 0x17e5))
	out := make([][][2]string, n)
	for i := range out {
		k := 5 + rng.IntN(36)
		perm := rng.Perm(len(itnsNames))[:k]
		pairs := make([][2]string, 0, k)
		for _, j := range perm {
			var v string
			switch rng.IntN(3) {
			case 0:
				v = edgeValues[rng.IntN(len(edgeValues))]
			case 1:
				v = edgeValues[rng.IntN(len(edgeValues))] + edgeValues[rng.IntN(len(edgeValues))]
			default:
				v = strconv.Itoa(rng.IntN(1_000_000))
			}
			pairs = append(pairs, [2]string{prefix + itnsNames[j], v})
		}
		out[i] = pairs
	}
	return out
}

func TestITNSCrossCheckPHP(t *testing.T) {
	php := testutil.NeedTool(t, "php") // php-cli
	const secret = "MY-SECRET key ü"
	for _, prefix := range []string{"", "c"} {
		for _, alg := range []Algorithm{AlgorithmSorted, AlgorithmV1} {
			t.Run(fmt.Sprintf("prefix=%q/%s", prefix, alg), func(t *testing.T) {
				v := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte(secret)}, Prefix: prefix, Algorithm: alg})
				notes := genNotifications(uint64(len(prefix))*10+uint64(alg), 200, prefix)

				// PHP signs, Go verifies.
				var phpBodies []string
				runPHP(t, php, "itns_sign.php", map[string]any{
					"secret": secret, "prefix": prefix, "algorithm": alg.String(), "notifications": notes,
				}, &phpBodies)
				if len(phpBodies) != len(notes) {
					t.Fatalf("php signed %d of %d", len(phpBodies), len(notes))
				}
				for i, body := range phpBodies {
					form, err := ParseForm([]byte(body))
					if err != nil {
						t.Fatalf("notification %d: PHP's body does not parse: %v\n%s", i, err, body)
					}
					if len(form) != len(notes[i])+1 {
						t.Fatalf("notification %d: %d fields parsed, %d sent", i, len(form), len(notes[i])+1)
					}
					for _, p := range notes[i] {
						if got, _ := form.Get(p[0]); got != p[1] {
							t.Fatalf("notification %d: field %s decoded as %q, PHP sent %q", i, p[0], got, p[1])
						}
					}
					if _, err := v.Verify(form); err != nil {
						t.Fatalf("notification %d: Go refuses PHP's signature: %v\n%s", i, err, body)
					}
					// Negative control: the same body under another secret.
					other := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte(secret + "x")}, Prefix: prefix, Algorithm: alg})
					if _, err := other.Verify(form); err == nil {
						t.Fatalf("notification %d: accepted under the wrong secret", i)
					}
				}

				// Go signs, PHP verifies; bodies signed with a wrong secret
				// must be refused by PHP too, or the check proves nothing.
				wrong := mustITNS(t, ITNSConfig{Secrets: [][]byte{[]byte("wrong")}, Prefix: prefix, Algorithm: alg})
				var goBodies []string
				for _, pairs := range notes {
					fields := make([]Field, len(pairs))
					for j, p := range pairs {
						fields[j] = Field{Name: p[0], Value: p[1]}
					}
					good, err := v.SignForm(fields)
					if err != nil {
						t.Fatal(err)
					}
					bad, err := wrong.SignForm(fields)
					if err != nil {
						t.Fatal(err)
					}
					goBodies = append(goBodies, good, bad)
				}
				var verdicts []bool
				runPHP(t, php, "itns_verify.php", map[string]any{
					"secret": secret, "prefix": prefix, "algorithm": alg.String(), "bodies": goBodies,
				}, &verdicts)
				if len(verdicts) != len(goBodies) {
					t.Fatalf("php judged %d of %d", len(verdicts), len(goBodies))
				}
				for i, ok := range verdicts {
					if want := i%2 == 0; ok != want {
						t.Fatalf("body %d (genuine=%v): PHP says %v\n%s", i, want, ok, goBodies[i])
					}
				}
			})
		}
	}
}
