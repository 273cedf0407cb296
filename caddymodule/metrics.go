package caddymodule

import (
	"errors"
	"fmt"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/postbackedge/caddy-postback/storage"
)

// Each config load gets a fresh metrics registry, so the collectors live in a
// usage pool and are registered into every new registry: their values survive
// config reloads.
var metricsPool = caddy.NewUsagePool()

const metricsPoolKey = "caddy_postback_metrics"

// Metrics are the caddy_postback_* collectors.
type Metrics struct {
	Filtered      *prometheus.CounterVec
	Enqueued      *prometheus.CounterVec
	Attempts      *prometheus.CounterVec
	Delivered     *prometheus.CounterVec
	Spooled       *prometheus.CounterVec
	Failed        *prometheus.CounterVec
	Cancelled     *prometheus.CounterVec
	QueueDepth    *prometheus.GaugeVec
	CircuitOpen   *prometheus.GaugeVec
	RateDelayed   *prometheus.CounterVec
	DeliverySecs  *prometheus.HistogramVec
	DedupeReplays *prometheus.CounterVec
	// DedupeUnavailable counts requests answered 503 because the replay
	// records could not be read or written (NATS away, in a fleet).
	DedupeUnavailable prometheus.Counter
	Verified          *prometheus.CounterVec
	AlertsSent        *prometheus.CounterVec
	AlertsFailed      *prometheus.CounterVec
	AlertsSuppressed  *prometheus.CounterVec
	// Notifications counts the notification log's records by outcome;
	// NotificationsDropped those it did not keep (queue full, or a
	// refusals budget spent).
	Notifications        *prometheus.CounterVec
	NotificationsDropped *prometheus.CounterVec
}

func (*Metrics) Destruct() error { return nil }

func newMetrics() *Metrics {
	const ns, sub = "caddy", "postback"
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help}, labels)
	}
	return &Metrics{
		Filtered:      counter("filtered_total", "Requests refused at the edge, by reason.", "reason"),
		Enqueued:      counter("enqueued_total", "Deliveries written to the durable queue.", "din"),
		Attempts:      counter("delivery_attempts_total", "Delivery attempts, by result (success, http_error, network_error).", "din", "result"),
		Delivered:     counter("delivered_total", "Deliveries acknowledged with a 2xx by the destination.", "din"),
		Spooled:       counter("spooled_total", "Deliveries written PGP-encrypted to the spool folder.", "din"),
		Failed:        counter("failed_total", "Deliveries that exhausted their retry schedule without a spool.", "din"),
		Cancelled:     counter("cancelled_total", "Held copies (only_accepted) dropped because the script did not answer 2xx.", "din"),
		RateDelayed:   counter("rate_delayed_total", "Due deliveries that waited for the destination's rate.", "din"),
		DedupeReplays: counter("replays_total", "Replayed notifications answered from the first response, by handler outcome.", "outcome"),
		DedupeUnavailable: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dedupe_unavailable_total",
			Help: "Notifications answered 503 (Retry-After) because the replay records could not be read or written."}),
		Verified:         counter("itns_verified_total", "Notifications whose signature matched, by the index of the configured secret that matched (from 0).", "secret_index"),
		AlertsSent:       counter("alerts_sent_total", "Alerts that reached a webhook, by event.", "event"),
		AlertsFailed:     counter("alerts_failed_total", "Alerts that did not reach a webhook after their tries, or were dropped on a full queue, by event.", "event"),
		AlertsSuppressed: counter("alerts_suppressed_total", "Events folded into a later alert by min_interval, by event.", "event"),
		Notifications:    counter("notifications_total", "Requests seen by a postback handler, by outcome (accepted, refused, replay_answered, replay_in_flight).", "outcome"),
		NotificationsDropped: counter("notifications_dropped_total",
			"Notification log records not kept, by reason (queue_full, budget: the hourly budget of records that were not accepted, disk_full: the store keeping its min_free_space).", "reason"),
		QueueDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "queue_depth", Help: "Pending deliveries.",
		}, []string{"din"}),
		CircuitOpen: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: ns, Subsystem: sub, Name: "circuit_open",
			Help: "1 while the destination's circuit breaker holds its deliveries after attempts failed in a row.",
		}, []string{"din"}),
		DeliverySecs: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: ns, Subsystem: sub, Name: "delivery_duration_seconds", Help: "Duration of delivery attempts.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"din"}),
	}
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.Filtered, m.Enqueued, m.Attempts, m.Delivered, m.Spooled,
		m.Failed, m.Cancelled, depthCollector{m.QueueDepth}, m.CircuitOpen, m.RateDelayed, m.DeliverySecs, m.DedupeReplays, m.DedupeUnavailable, m.Verified,
		m.AlertsSent, m.AlertsFailed, m.AlertsSuppressed, m.Notifications, m.NotificationsDropped, journalCollector{}}
}

// journalCollector reports the open stores' journals when it is scraped.
type journalCollector struct{}

var (
	journalWaitingDesc = prometheus.NewDesc("caddy_postback_journal_waiting",
		"Deliveries in the journal that the Badger queue does not hold yet (first attempt not recorded).", nil, nil)
	journalCommitsDesc = prometheus.NewDesc("caddy_postback_journal_commits_total",
		"Group commits of the journal (one fsync each) since the store was opened.", nil, nil)
	journalSpilledDesc = prometheus.NewDesc("caddy_postback_journal_spilled_total",
		"Deliveries moved from the journal into the Badger queue before any attempt (destination down or slow) since the store was opened.", nil, nil)
)

func (journalCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- journalWaitingDesc
	ch <- journalCommitsDesc
	ch <- journalSpilledDesc
}

func (journalCollector) Collect(ch chan<- prometheus.Metric) {
	var sum storage.JournalStats
	enginePool.Range(func(_, v any) bool {
		if st, ok := v.(*pooledEngine).store.JournalStats(); ok {
			sum.Waiting += st.Waiting
			sum.Commits += st.Commits
			sum.Spilled += st.Spilled
		}
		return true
	})
	ch <- prometheus.MustNewConstMetric(journalWaitingDesc, prometheus.GaugeValue, float64(sum.Waiting))
	ch <- prometheus.MustNewConstMetric(journalCommitsDesc, prometheus.CounterValue, float64(sum.Commits))
	ch <- prometheus.MustNewConstMetric(journalSpilledDesc, prometheus.CounterValue, float64(sum.Spilled))
}

// depthCollector sets the queue-depth gauge from the open stores when it is
// scraped. Setting it on every enqueue and every finished delivery cost an
// index seek per DIN (store.Stats) on the request path: about 5 % of the
// chain's CPU in `make bench` (docs/performance-history.md).
type depthCollector struct{ g *prometheus.GaugeVec }

func (c depthCollector) Describe(ch chan<- *prometheus.Desc) { c.g.Describe(ch) }

func (c depthCollector) Collect(ch chan<- prometheus.Metric) {
	// The usage pool holds exactly the open engines.
	enginePool.Range(func(_, v any) bool {
		v.(*pooledEngine).refreshDepth(c.g)
		return true
	})
	c.g.Collect(ch)
}

// loadMetrics returns the process-wide collectors, registered into ctx's
// registry, and releases them when ctx is cancelled.
func loadMetrics(ctx caddy.Context) (*Metrics, error) {
	v, _, err := metricsPool.LoadOrNew(metricsPoolKey, func() (caddy.Destructor, error) {
		return newMetrics(), nil
	})
	if err != nil {
		return nil, err
	}
	ctx.OnCancel(func() { _, _ = metricsPool.Delete(metricsPoolKey) })
	m := v.(*Metrics)
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		for _, c := range m.collectors() {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					return nil, fmt.Errorf("register postback metrics: %w", err)
				}
			}
		}
	}
	return m, nil
}
