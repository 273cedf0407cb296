package notelog

import (
	"context"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Note is one request's record while the request runs. It belongs to the
// request's goroutine: the postback handlers of one request run one after
// the other, never at once.
type Note struct {
	rec     storage.Notification
	decided bool
	labels  []string
	form    []byte
}

type ctxKey struct{}

// With returns ctx carrying n.
func With(ctx context.Context, n *Note) context.Context { return context.WithValue(ctx, ctxKey{}, n) }

// From returns the request's note, or nil.
func From(ctx context.Context) *Note {
	n, _ := ctx.Value(ctxKey{}).(*Note)
	return n
}

// Refuse records that a handler refused the request, and why. The first
// decision stands: a later handler never saw the request.
func (n *Note) Refuse(reason string) { n.decide(storage.OutcomeRefused, reason) }

// Replay records a replay answered from the first answer, or one refused
// while the first is in flight.
func (n *Note) Replay(inFlight bool) {
	if inFlight {
		n.decide(storage.OutcomeReplayInFlight, "")
		return
	}
	n.decide(storage.OutcomeReplayAnswered, "")
}

func (n *Note) decide(outcome, reason string) {
	if n == nil || n.decided {
		return
	}
	n.rec.Outcome, n.rec.Reason, n.decided = outcome, reason, true
}

// AddDeliveries records the copies written for the request.
func (n *Note) AddDeliveries(ids ...string) {
	if n != nil {
		n.rec.Deliveries = append(n.rec.Deliveries, ids...)
	}
}

// Request describes the request a note is made for.
type Request struct {
	At     time.Time
	Host   string
	Path   string
	Method string
	IP     string
	// Labels are the form fields whose values the record keeps.
	Labels []string
}

// Bounds of a record's request fields: with the label values they keep a
// record under about 1 KB, whatever a flood of refusals sends.
const (
	maxHost   = 255
	maxPath   = 512
	maxMethod = 16
)

// NewNote starts the record of req.
func NewNote(req Request) *Note {
	return &Note{
		rec: storage.Notification{
			At:     req.At,
			Host:   clip(req.Host, maxHost),
			Path:   clip(req.Path, maxPath),
			Method: clip(req.Method, maxMethod),
			IP:     req.IP,
		},
		labels: req.Labels,
	}
}
