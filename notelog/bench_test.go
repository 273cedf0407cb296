package notelog

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

type discardSink struct{}

func (discardSink) AppendNotifications([]storage.Notification) error { return nil }

// BenchmarkRequestPath is what a request pays for its record: the note, the
// request's context carrying it, the decision and the hand-off to the
// writer (whose work is off the request path).
func BenchmarkRequestPath(b *testing.B) {
	l := New(Options{Sink: discardSink{}, QueueSize: 1 << 16})
	l.Start()
	defer l.Stop(context.Background())
	form := []byte("ctransreceipt=KX8F2Q0N&ctransaction=SALE&ccustemail=jane%40example.com")
	req := httptest.NewRequest("POST", "/ipn.php", nil)
	labels := []string{"ctransreceipt", "ctransaction"}
	b.ReportAllocs()
	for b.Loop() {
		n := NewNote(Request{At: time.Now(), Host: req.Host, Path: req.URL.Path, Method: req.Method, IP: "203.0.113.7", Labels: labels})
		r := req.WithContext(With(req.Context(), n))
		From(r.Context()).AddDeliveries("18ee20045933f7ec1d1d9c268cb03876")
		l.Finish(n, 200, form)
	}
}
