package caddymodule

import (
	"errors"
	"io"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// statusRecorder passes the response through unchanged and notes its
// status: what the script answered.
type statusRecorder struct {
	*caddyhttp.ResponseWriterWrapper
	status int
}

func (sr *statusRecorder) WriteHeader(code int) {
	// 1xx responses are informational: passed on, not the answer.
	if sr.status == 0 && code >= 200 {
		sr.status = code
	}
	sr.ResponseWriterWrapper.WriteHeader(code)
}

func (sr *statusRecorder) Write(p []byte) (int, error) {
	if sr.status == 0 {
		sr.status = http.StatusOK
	}
	return sr.ResponseWriterWrapper.Write(p)
}

// ReadFrom notes the implicit 200 before handing the reader on.
func (sr *statusRecorder) ReadFrom(r io.Reader) (int64, error) {
	if sr.status == 0 {
		sr.status = http.StatusOK
	}
	return sr.ResponseWriterWrapper.ReadFrom(r)
}

// answer is the status the client gets once the handler chain returned
// err: what was written, else the handler error's status (Caddy's error
// routes answer it), else net/http's implicit 200.
func (sr *statusRecorder) answer(err error) int {
	if sr.status != 0 {
		return sr.status
	}
	if err != nil {
		var he caddyhttp.HandlerError
		if errors.As(err, &he) && he.StatusCode != 0 {
			return he.StatusCode
		}
		return http.StatusInternalServerError
	}
	return http.StatusOK
}

var (
	_ http.ResponseWriter = (*statusRecorder)(nil)
	_ io.ReaderFrom       = (*statusRecorder)(nil)
)
