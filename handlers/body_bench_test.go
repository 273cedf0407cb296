package handlers

import (
	"bytes"
	"io"
	"net/http"
	"testing"
	"time"
)

// BenchmarkCaptureBody measures what the first postback handler of a route
// does with the body of a ~1.1 KB notification: read it into memory (with
// and without a Content-Length) and put an identical body back; and what
// the later handlers pay, who find it captured already.
func BenchmarkCaptureBody(b *testing.B) {
	v := mustITNS(b, ITNSConfig{Secrets: [][]byte{[]byte("current-secret")}, Prefix: "c"})
	body := benchNotification(b, v, time.Now())
	newReq := func(length int64) *http.Request {
		r, err := http.NewRequest(http.MethodPost, "http://127.0.0.1/itns.php", nil)
		if err != nil {
			b.Fatal(err)
		}
		r.ContentLength = length
		return r
	}
	for _, c := range []struct {
		name   string
		length int64
	}{{"content_length", int64(len(body))}, {"chunked", -1}} {
		b.Run("first/"+c.name, func(b *testing.B) {
			r := newReq(c.length)
			rd := bytes.NewReader(body)
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				rd.Reset(body)
				r.Body = io.NopCloser(rd)
				r.ContentLength = c.length
				got, err := CaptureBody(r, 0)
				if err != nil || len(got) != len(body) {
					b.Fatalf("CaptureBody = %d bytes, %v", len(got), err)
				}
			}
		})
	}
	b.Run("again", func(b *testing.B) {
		r := newReq(int64(len(body)))
		r.Body = io.NopCloser(bytes.NewReader(body))
		if _, err := CaptureBody(r, 0); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := CaptureBody(r, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
