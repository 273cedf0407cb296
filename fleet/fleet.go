package fleet

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/postbackedge/caddy-postback/storage"
)

// Fleet is one edge's connection to the fleet: NATS, its buckets and this
// edge's claim on its node name. Close releases all three.
type Fleet struct {
	opts   Options
	nc     *nats.Conn
	js     jetstream.JetStream
	seal   *sealer
	replay jetstream.KeyValue
	nodes  *registry
	// deliveries and stats hold the fleet's history (records.go, history.go).
	deliveries jetstream.KeyValue
	stats      jetstream.KeyValue
	records    *Records
	local      atomic.Pointer[LocalHistory]
	// queue is set once the queue of queue jetstream is opened.
	queue atomic.Pointer[Queue]

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once
}

// opTimeout bounds one NATS operation on the request path: with NATS away
// the request is answered 503 (the sender retries) rather than held.
const opTimeout = 3 * time.Second

// Connect connects to NATS, makes or checks the buckets and claims the
// node name. NATS unreachable, refused credentials, more replicas than
// JetStream servers, a bucket made by another version and a node name in
// use by another edge are errors: the edge does not start.
func Connect(ctx context.Context, o Options) (*Fleet, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	seal, err := newSealer(o.Key)
	if err != nil {
		return nil, err
	}
	nopts, err := o.natsOptions()
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(strings.Join(o.Servers, ","), nopts...)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to nats %s: %w", strings.Join(o.Servers, " "), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: jetstream: %w", err)
	}
	f := &Fleet{opts: o, nc: nc, js: js, seal: seal}
	if err := f.setUp(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	hctx, cancel := context.WithCancel(context.Background())
	f.cancel = cancel
	f.wg.Add(3)
	go func() {
		defer f.wg.Done()
		f.nodes.heartbeat(hctx)
	}()
	go func() {
		defer f.wg.Done()
		f.records.run(hctx)
	}()
	go func() {
		defer f.wg.Done()
		f.publishSnapshots(hctx)
	}()
	o.Logger.Info("joined the fleet", "node", o.Node, "nats", nc.ConnectedUrlRedacted(), "replicas", o.Replicas, "prefix", o.Prefix)
	return f, nil
}

func (f *Fleet) setUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, f.opts.ConnectTimeout+10*time.Second)
	defer cancel()
	if _, err := f.js.AccountInfo(ctx); err != nil {
		return fmt.Errorf("cluster: JetStream not available on %s: %w", f.nc.ConnectedUrlRedacted(), err)
	}
	var err error
	if f.replay, err = f.bucket(ctx, "replay", "itns_verify dedupe records"); err != nil {
		return err
	}
	nodes, err := f.bucket(ctx, "nodes", "the edges' node names")
	if err != nil {
		return err
	}
	if f.deliveries, err = f.bucket(ctx, "deliveries", "delivery records of every edge (no payload)"); err != nil {
		return err
	}
	if f.stats, err = f.bucket(ctx, "stats", "every edge's counts"); err != nil {
		return err
	}
	f.records = &Records{f: f, ch: make(chan storage.Delivery, recordBuffer)}
	f.nodes = &registry{f: f, kv: nodes}
	return f.nodes.claim(ctx, true)
}

// natsOptions turns the options into nats.go's: reconnect for ever (an
// edge outlives any NATS restart), and log the connection's changes.
func (o *Options) natsOptions() ([]nats.Option, error) {
	log := o.Logger
	opts := []nats.Option{
		nats.Name("caddy-postback " + o.Node),
		nats.Timeout(o.ConnectTimeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		// No buffering while disconnected: a write the request was answered
		// 503 for must fail now, not land later.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			log.Error("nats", "error", err)
		}),
	}
	switch {
	case o.CredsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	case o.User != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("cluster: nkey %s: %w", o.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	}
	if o.CACert != "" {
		opts = append(opts, nats.RootCAs(o.CACert))
	}
	if o.ClientCert != "" {
		opts = append(opts, nats.ClientCert(o.ClientCert, o.ClientKey))
	}
	return opts, nil
}

// Records is the sink for this edge's delivery records
// (delivery.WithRecords).
func (f *Fleet) Records() *Records { return f.records }

// Node is this edge's name in the fleet.
func (f *Fleet) Node() string { return f.opts.Node }

// Connected reports whether the connection to NATS is up now.
func (f *Fleet) Connected() bool { return f.nc.IsConnected() }

// Close gives up the node name and closes the connection.
func (f *Fleet) Close() error {
	f.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
		defer cancel()
		_ = f.PublishSnapshot(ctx) // the fleet keeps this edge's last counts
		f.cancel()
		f.wg.Wait()
		f.records.flush(ctx)
		f.nodes.release(ctx)
		if err := f.nc.Drain(); err != nil {
			f.nc.Close()
		}
	})
	return nil
}

// IsUnavailable reports whether err means NATS could not be reached or did
// not answer in time, as opposed to a refusal.
func IsUnavailable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) || errors.Is(err, nats.ErrReconnectBufExceeded)
}
