package handlers

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// DefaultMaxBody bounds what the handlers read into memory when no max_body
// is configured. Postbacks are a few kilobytes.
const DefaultMaxBody int64 = 1 << 20

// CapturedBody replaces a request body once it has been read into memory, so
// that the next handler (and the legacy script) reads the same bytes and the
// other postback handlers do not read it again.
type CapturedBody struct {
	*bytes.Reader
	data []byte
}

// Bytes returns the captured body; callers must not modify it.
func (c *CapturedBody) Bytes() []byte { return c.data }

// Close implements io.ReadCloser.
func (c *CapturedBody) Close() error { return nil }

// CaptureBody reads the request body (at most max bytes, DefaultMaxBody when
// max <= 0) and puts an identical body back on r. A body that was already
// captured is returned without reading. A larger body yields a 413 Denial, an
// unreadable one a 400 Denial; neither is passed on.
func CaptureBody(r *http.Request, max int64) ([]byte, error) {
	if max <= 0 {
		max = DefaultMaxBody
	}
	if c, ok := r.Body.(*CapturedBody); ok {
		if int64(len(c.data)) > max {
			return nil, Deny(http.StatusRequestEntityTooLarge, ReasonBodyTooLarge)
		}
		return c.data, nil
	}
	if r.ContentLength > max {
		return nil, Deny(http.StatusRequestEntityTooLarge, ReasonBodyTooLarge)
	}
	var data []byte
	if r.Body != nil && r.Body != http.NoBody {
		// Read one byte more than allowed to tell "exactly max" from "too large".
		b, err := io.ReadAll(io.LimitReader(r.Body, max+1))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return nil, Deny(http.StatusRequestEntityTooLarge, ReasonBodyTooLarge)
			}
			return nil, &bodyError{err: err}
		}
		if int64(len(b)) > max {
			return nil, Deny(http.StatusRequestEntityTooLarge, ReasonBodyTooLarge)
		}
		data = b
	}
	r.Body = &CapturedBody{Reader: bytes.NewReader(data), data: data}
	// The body is now known: the script gets a Content-Length, even when the
	// sender chunked it.
	r.ContentLength = int64(len(data))
	r.TransferEncoding = nil
	return data, nil
}

// bodyError is a body that could not be read (client gone, broken chunking);
// it is a 400 Denial that keeps the cause for the log.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return fmt.Sprintf("read request body: %v", e.err) }
func (e *bodyError) Unwrap() error { return e.err }

// As lets errors.As find the Denial behind a body read error.
func (e *bodyError) As(target any) bool {
	if d, ok := target.(**Denial); ok {
		*d = Deny(http.StatusBadRequest, ReasonBodyUnreadable)
		return true
	}
	return false
}
