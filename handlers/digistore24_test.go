package handlers

import (
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/internal/testutil"
)

func mustDigistore24(t testing.TB, secrets ...string) *Digistore24 {
	t.Helper()
	var s [][]byte
	for _, x := range secrets {
		s = append(s, []byte(x))
	}
	d, err := NewDigistore24(Digistore24Config{Secrets: s})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDigistore24KnownVector(t *testing.T) {
	d := mustDigistore24(t, "PASS")
	form := formOf(t, "order_id=A3NXHEHF&event=on_payment&empty=&amount=1&custom=Tom+%26amp%3B+Jerry&sha_sign=x")
	// By hand: sorted names, the empty one skipped, &amp; decoded, the
	// passphrase after every pair.
	sum := sha512.Sum512([]byte("amount=1PASScustom=Tom & JerryPASSevent=on_paymentPASSorder_id=A3NXHEHFPASS"))
	if got, want := d.Sign(form, []byte("PASS")), strings.ToUpper(hex.EncodeToString(sum[:])); got != want {
		t.Fatalf("Sign = %s\nwant %s", got, want)
	}
}

func TestDigistore24Check(t *testing.T) {
	d := mustDigistore24(t, "new-pass", "old-pass")
	fields := []Field{{"event", "on_payment"}, {"order_id", "A3NXHEHF"}, {"address_first_name", "Jürgen"},
		{"product_name", "Guide – 2nd edition"}, {"email", "a@b.example"}, {"custom", ""}, {"tags[0]", "vip"}, {"tags[1]", "de"}}
	body, err := d.SignForm(fields)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(body, "&sha_sign=") || !strings.HasPrefix(body, "event=on_payment&order_id=A3NXHEHF&") {
		t.Fatalf("body %s", body)
	}
	old, _ := mustDigistore24(t, "old-pass").SignForm(fields)
	sig := body[strings.Index(body, "sha_sign=")+len("sha_sign="):]
	unsigned := body[:strings.Index(body, "&sha_sign=")]
	const ct = "application/x-www-form-urlencoded"
	cases := []struct {
		name, ct, body, reason string
		idx                    int
	}{
		{"genuine", ct, body, "", 0},
		{"old passphrase", ct, old, "", 1},
		{"SHASIGN", ct, unsigned + "&SHASIGN=" + sig, "", 0},
		{"lower case", ct, unsigned + "&sha_sign=" + strings.ToLower(sig), "", 0},
		{"both, both right", ct, body + "&SHASIGN=" + sig, "", 0},
		{"both, one wrong", ct, body + "&SHASIGN=" + strings.Repeat("0", 128), ReasonSignatureMismatch, 0},
		{"unsigned", ct, unsigned, ReasonSignatureMissing, 0},
		{"tampered", ct, strings.Replace(body, "A3NXHEHF", "A3NXHEHG", 1), ReasonSignatureMismatch, 0},
		{"an empty field added", ct, unsigned + "&note=&sha_sign=" + sig, "", 0},
		{"a field added", ct, unsigned + "&note=x&sha_sign=" + sig, ReasonSignatureMismatch, 0},
		{"short", ct, unsigned + "&sha_sign=" + sig[:127], ReasonSignatureMismatch, 0},
		{"json", "application/json", body, ReasonContentType, 0},
		{"duplicate", ct, body + "&event=on_refund", ReasonDuplicateField, 0},
		{"value and array", ct, body + "&tags=x", ReasonDuplicateField, 0},
		{"empty index", ct, body + "&ids[]=1", ReasonMalformed, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := d.Check(tc.ct, []byte(tc.body), time.Now())
			if tc.reason == "" {
				if err != nil || n.SecretIndex != tc.idx {
					t.Fatalf("got %+v, %v", n, err)
				}
				if n.Receipt != "" || len(n.ReplayKey()) == 0 {
					t.Fatalf("notification %+v", n)
				}
				return
			}
			if denialReason(err) != tc.reason {
				t.Fatalf("got %v, want %s", err, tc.reason)
			}
		})
	}
}

func TestParseFormArrays(t *testing.T) {
	for _, ok := range []string{"a[b]=1&a[c]=2", "a[b][c]=1&a[b][d]=2", "a[0]=1&a[00]=2", "x=1&a[x]=2", "10=a&b=1", "a[1]=1&a[2]=2"} {
		if _, err := ParseFormArrays([]byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for body, reason := range map[string]string{
		"a=1&a[b]=2":          ReasonDuplicateField,
		"a[b]=1&a[b][c]=2":    ReasonDuplicateField,
		"a.b[x]=1&a_b[x]=2":   ReasonDuplicateField,
		"a+b=1&a_b=2":         ReasonDuplicateField,
		"a[b]=1&a[b]=2":       ReasonDuplicateField,
		"a[]=1":               ReasonMalformed,
		"a[b=1":               ReasonMalformed,
		"a[b]c=1":             ReasonMalformed,
		"a[[b]]=1":            ReasonMalformed,
		"[a]=1":               ReasonMalformed,
		"a]=1":                ReasonMalformed,
		"10=a&9=b":            ReasonMalformed,
		"1e3=a&+5=b":          ReasonMalformed,
		"a=%zz":               ReasonMalformed,
		"a=1&a=2":             ReasonDuplicateField,
		"a%00b=1&a=2":         ReasonDuplicateField,
		"%20a=1&a=2":          ReasonDuplicateField,
		"a[b]=1&a[b]%00x[c]=": ReasonDuplicateField,
	} {
		_, err := ParseFormArrays([]byte(body))
		if denialReason(err) != reason || denialStatus(err) != 400 {
			t.Errorf("%s: %v, want %s", body, err, reason)
		}
	}
	for s, want := range map[string]bool{"1": true, " 1": true, "1 ": true, "-1.5": true, ".5": true, "1.": true, "1e5": true, "1E-5": true,
		"+0": true, "1e": false, "e5": false, "0x1A": false, "1a": false, "": false, ".": false, "a": false, "1 2": false, "--1": false} {
		if phpNumeric(s) != want {
			t.Errorf("phpNumeric(%q) = %v", s, !want)
		}
	}
}

// digistore24Names are Digistore24 IPN fields, array fields among them.
var digistore24Names = strings.Fields(`event event_label order_id order_item_id product_id product_name
	address_first_name address_last_name address_street address_city address_country email
	amount_brutto amount_netto currency pay_method transaction_id transaction_type billing_type
	pay_sequence_no custom affiliate_name order_date_time language upsell_no tags[0] tags[1]
	custom_fields[color] custom_fields[size] voucher_code buyer_id ipn_version`)

// entityValues are values in which html_entity_decode changes something
// or must not.
var entityValues = []string{"Tom &amp; Jerry", "M&uuml;ller", "&euro;19,95", "it&#39;s", "&#x41;&#X42;&#67;", "&apos;",
	"&AMP;", "&amp", "&", "&&amp;", "a&b;c", "&#0;", "&#128;", "&#xD800;", "&#1114111;", "&#1114112;", "&#99999999999999999999;",
	"&#x0x41;", "&#0x41;", "&nbsp;", "&quot;x&quot;", "&lt;b&gt;", "&#9;&#10;&#13;", "x&lt;", "&lt", "&#65", "&#;", "&#x;", "&;"}

func genDigistore24(seed uint64, n int) [][][2]string {
	rng := rand.New(rand.NewPCG(seed, 0xd5))
	out := make([][][2]string, n)
	for i := range out {
		k := 5 + rng.IntN(len(digistore24Names)-5)
		var pairs [][2]string
		for _, j := range rng.Perm(len(digistore24Names))[:k] {
			var v string
			switch rng.IntN(4) {
			case 0:
				v = edgeValues[rng.IntN(len(edgeValues))]
			case 1:
				v = entityValues[rng.IntN(len(entityValues))]
			case 2:
				v = edgeValues[rng.IntN(len(edgeValues))] + entityValues[rng.IntN(len(entityValues))]
			default:
				v = fmt.Sprint(rng.IntN(100000))
			}
			pairs = append(pairs, [2]string{digistore24Names[j], v})
		}
		if rng.IntN(4) == 0 { // one numeric name sorts byte-wise too
			pairs = append(pairs, [2]string{[]string{"123", "1e3", "0"}[rng.IntN(3)], "n"})
		}
		out[i] = pairs
	}
	return out
}

// Digistore24's published digistore_signature, run by php-cli, gives the
// signatures Go gives, and accepts Go's bodies under the passphrase only.
func TestDigistore24CrossCheckPHP(t *testing.T) {
	php := testutil.NeedTool(t, "php")
	const secret = "DS24 pass ü–"
	d := mustDigistore24(t, secret)
	wrong := mustDigistore24(t, secret+"x")
	notes := genDigistore24(1, 300)

	var phpSigs []string
	runPHP(t, php, "digistore24.php", map[string]any{"secret": secret, "mode": "sign", "items": notes}, &phpSigs)
	if len(phpSigs) != len(notes) {
		t.Fatalf("php signed %d of %d", len(phpSigs), len(notes))
	}
	var bodies []string
	for i, pairs := range notes {
		fields := make([]Field, len(pairs))
		for j, p := range pairs {
			fields[j] = Field{p[0], p[1]}
		}
		form, err := ParseFormArrays([]byte(EncodeForm(fields)))
		if err != nil {
			t.Fatalf("notification %d: %v", i, err)
		}
		if got := d.Sign(form, []byte(secret)); got != phpSigs[i] {
			t.Fatalf("notification %d: Go %s, PHP %s\n%q", i, got, phpSigs[i], pairs)
		}
		good, err := d.SignForm(fields)
		if err != nil {
			t.Fatal(err)
		}
		bad, _ := wrong.SignForm(fields)
		bodies = append(bodies, good, bad)
	}
	var verdicts []bool
	runPHP(t, php, "digistore24.php", map[string]any{"secret": secret, "mode": "verify", "items": bodies}, &verdicts)
	for i, ok := range verdicts {
		if want := i%2 == 0; ok != want {
			t.Fatalf("body %d (genuine=%v): PHP says %v\n%s", i, want, ok, bodies[i])
		}
	}
	if len(verdicts) != len(bodies) {
		t.Fatalf("php judged %d of %d", len(verdicts), len(bodies))
	}
}

// html_entity_decode itself, on every HTML 4.01 entity and the edge cases.
func TestPHPHTMLEntityDecodeCrossCheck(t *testing.T) {
	php := testutil.NeedTool(t, "php")
	var items []string
	for name := range html401Entities {
		items = append(items, "&"+name+";", "x&"+name+";y", "&"+name, "&"+strings.ToUpper(name)+";")
	}
	items = append(items, entityValues...)
	for _, cp := range []int{0, 8, 9, 10, 11, 13, 31, 32, 38, 39, 126, 127, 159, 160, 0xd7ff, 0xd800, 0xdfff, 0xe000, 0xfdd0, 0xfffe, 0xffff, 0x10000, 0x10fffe, 0x10ffff, 0x110000} {
		items = append(items, fmt.Sprintf("&#%d;", cp), fmt.Sprintf("&#x%x;", cp), fmt.Sprintf("&#X%X;", cp), fmt.Sprintf("&#000%d;", cp))
	}
	rng := rand.New(rand.NewPCG(7, 7))
	alphabet := []string{"&", "#", "x", "X", "0", "1", "9", "a", "F", ";", "amp", "lt", "uuml", " ", "ü", "–", "0x", "3"}
	for i := 0; i < 3000; i++ {
		var b strings.Builder
		for j := rng.IntN(12); j >= 0; j-- {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		items = append(items, b.String())
	}
	var got []string
	runPHP(t, php, "digistore24.php", map[string]any{"secret": "-", "mode": "decode", "items": items}, &got)
	if len(got) != len(items) {
		t.Fatalf("php decoded %d of %d", len(got), len(items))
	}
	for i, s := range items {
		want, _ := hex.DecodeString(got[i])
		if g := PHPHTMLEntityDecode(s); g != string(want) {
			t.Errorf("%q: Go %q, PHP %q", s, g, want)
		}
	}
	if u := url.QueryEscape(PHPHTMLEntityDecode("&uuml;")); u != "%C3%BC" {
		t.Fatalf("&uuml; is %s", u)
	}
}
