package handlers

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// wireBody is a request body as a server hands it over.
type wireBody struct{ io.Reader }

func (wireBody) Close() error { return nil }

func TestCaptureBodyPutsBackTheSameBytes(t *testing.T) {
	const form = "ctransaction=SALE&ccustemail=jane%40example.com&cverify=0A1B2C3D"
	for _, length := range []int64{int64(len(form)), -1} { // with and without Content-Length
		r, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/itns.php", nil)
		wire := &countingReader{r: strings.NewReader(form)}
		r.Body, r.ContentLength = wireBody{wire}, length
		if length < 0 {
			r.TransferEncoding = []string{"chunked"}
		}
		got, err := CaptureBody(r, 0)
		if err != nil || string(got) != form {
			t.Fatalf("CaptureBody = %q, %v", got, err)
		}
		if r.ContentLength != int64(len(form)) || r.TransferEncoding != nil {
			t.Errorf("ContentLength %d, TransferEncoding %v: want the known length", r.ContentLength, r.TransferEncoding)
		}
		// A second handler gets the same bytes without reading the wire.
		reads := wire.reads
		again, err := CaptureBody(r, 0)
		if err != nil || string(again) != form || wire.reads != reads {
			t.Fatalf("second CaptureBody = %q, %v, %d more wire reads", again, err, wire.reads-reads)
		}
		// The script reads them too.
		if b, err := io.ReadAll(r.Body); err != nil || string(b) != form {
			t.Errorf("the body passed on reads %q, %v", b, err)
		}
	}
}

type countingReader struct {
	r     io.Reader
	reads int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.reads++
	return c.r.Read(p)
}

func TestCaptureBodyBounds(t *testing.T) {
	newReq := func(body string, length int64) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1/", nil)
		r.Body, r.ContentLength = wireBody{strings.NewReader(body)}, length
		return r
	}
	var d *Denial
	// Announced too large: refused before reading.
	if _, err := CaptureBody(newReq("x", 11), 10); !errors.As(err, &d) || d.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("announced 11 of 10: %v", err)
	}
	// Chunked and too large: refused after max+1 bytes.
	if _, err := CaptureBody(newReq(strings.Repeat("x", 11), -1), 10); !errors.As(err, &d) || d.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked 11 of 10: %v", err)
	}
	// Exactly max passes; a later handler with a smaller max refuses it.
	r := newReq(strings.Repeat("x", 10), -1)
	if got, err := CaptureBody(r, 10); err != nil || len(got) != 10 {
		t.Fatalf("exactly 10 of 10: %d bytes, %v", len(got), err)
	}
	if _, err := CaptureBody(r, 5); !errors.As(err, &d) || d.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("captured 10, later max 5: %v", err)
	}
	// A broken body is a 400.
	r = newReq("", -1)
	r.Body = wireBody{io.MultiReader(strings.NewReader("a=1"), errReader{})}
	if _, err := CaptureBody(r, 0); !errors.As(err, &d) || d.Status != http.StatusBadRequest {
		t.Errorf("unreadable body: %v", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }
