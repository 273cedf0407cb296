package handlers

import (
	"strconv"
	"testing"
	"time"
)

// benchNotification is a realistic ClickBank-style notification: 40 fields
// with the AffiliCon/ClickBank names, an email with %40, non-ASCII text and
// some empty values, signed with prefix c. About 1.1 KB encoded.
func benchNotification(b *testing.B, v *ITNS, now time.Time) []byte {
	b.Helper()
	values := map[string]string{
		"custfullname": "Jürgen Müller", "custfirstname": "Jürgen", "custlastname": "Müller",
		"custzip": "50667", "custcc": "DE", "custshipto": "Jürgen Müller", "custaddr1": "Hohe Straße 12",
		"custaddr2": "", "custcity": "Köln", "custshippingzip": "50667", "custshippingcountry": "DE",
		"custemail": "juergen.mueller@example.com", "custphone": "+49 221 1234567", "prodid": "1707",
		"prodtitle": "Marketing Guide – 2nd edition", "prodtype": "STANDARD", "transaction": "SALE",
		"billno": "1", "aboid": "", "aboend": "", "transaffiliate": "affil42", "accountammount": "2990",
		"orderamount": "4700", "transpaymentmethod": "PYPL", "currency": "EUR", "transvendor": "vendor1",
		"tranreceipt": "AB12CD34EF", "rfndreceipt": "", "subid": "spring", "data1": "spring",
		"data2": "banner-3", "custom": "12345AbC", "transtime": strconv.FormatInt(now.Unix(), 10),
		"orderlanguage": "de", "proditem": "17", "taxamount": "751", "shippingamount": "0",
		"transrole": "VENDOR", "noticeversion": "4.0", "cartid": "",
	}
	fields := make([]Field, 0, len(values))
	for n, val := range values {
		fields = append(fields, Field{Name: "c" + n, Value: val})
	}
	if len(fields) != 40 {
		b.Fatalf("%d fields, want 40", len(fields))
	}
	body, err := v.SignForm(fields)
	if err != nil {
		b.Fatal(err)
	}
	return []byte(body)
}

// BenchmarkVerify measures what itns_verify does per request: content type,
// form parsing with duplicate detection, signature check against two
// secrets (a rotation in progress, the current one first) and transtime.
func BenchmarkVerify(b *testing.B) {
	now := time.Now()
	v := mustITNS(b, ITNSConfig{Secrets: [][]byte{[]byte("current-secret"), []byte("previous-secret")}, Prefix: "c", MaxAge: 15 * time.Minute})
	body := benchNotification(b, v, now)
	b.Run("check", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, _, err := v.Check("application/x-www-form-urlencoded", body, now); err != nil {
				b.Fatal(err)
			}
		}
	})
	form, err := ParseForm(body)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("signature_only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := v.Verify(form); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("replay_key", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ReplayKey(form)
		}
	})
}
