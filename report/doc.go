// Package report is the operator's view of the delivery queue: the JSON
// shapes of the admin API, the per-destination health summary, the hourly
// chart and the server-rendered report page with its CSRF protection.
//
// It is plain Go (standard library and storage only). The Caddy adapters in
// caddymodule mount API on the admin endpoint and Page as an HTTP handler;
// both read the queue through Source.
package report

import (
	"context"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// Source is what the report reads of the running postback app: its
// deliveries and its notification log.
type Source interface {
	DeliverySource
	// Notifications lists the notification log, newest first.
	Notifications(f storage.NotificationFilter) ([]storage.Notification, string, error)
}

// DeliverySource is the delivery side of Source; *delivery.Engine is one.
type DeliverySource interface {
	// DINs lists the configured destinations, sorted.
	DINs() []string
	Stats() (map[string]storage.DINStats, error)
	Hourly(since time.Time) ([]storage.HourBucket, error)
	List(f storage.Filter) ([]storage.Delivery, string, error)
	Get(id string) (storage.Delivery, error)
	// Retry puts a failed delivery (or a spooled one that still has its
	// payload) back to pending and wakes its worker.
	Retry(id string, now time.Time) (storage.Delivery, error)
	// RetryMatching retries every retryable delivery f selects (all
	// pages) and says how many it put back.
	RetryMatching(ctx context.Context, f storage.Filter, now time.Time) (int, error)
	// CircuitOpen reports whether din's circuit breaker holds its
	// deliveries, and since when.
	CircuitOpen(din string) (since time.Time, open bool)
	// RateDelayed counts din's due deliveries that waited for its rate on
	// this edge since it started.
	RateDelayed(din string) uint64
}
