package delivery

import (
	"context"
	"time"

	"github.com/postbackedge/caddy-postback/storage"
)

// RecordSink learns every delivery record a store writes (never a
// payload), to publish it elsewhere: a fleet's history. Record must not
// block (the request path calls it).
type RecordSink interface {
	Record(d storage.Delivery)
}

// WithRecords returns store, with every record that Enqueue, Complete,
// Retry, RetryMany, Release and Cancel write also handed to sink, after
// the store has written it.
func WithRecords(store Store, sink RecordSink) Store {
	return recordedStore{Store: store, sink: sink}
}

type recordedStore struct {
	Store
	sink RecordSink
}

func (s recordedStore) Enqueue(ctx context.Context, items []storage.NewDelivery) ([]storage.Delivery, error) {
	recs, err := s.Store.Enqueue(ctx, items)
	if err == nil {
		for _, d := range recs {
			s.sink.Record(d)
		}
	}
	return recs, err
}

func (s recordedStore) Complete(id string, a storage.Attempt, out storage.Outcome) (storage.Delivery, error) {
	d, err := s.Store.Complete(id, a, out)
	if err == nil {
		s.sink.Record(d)
	}
	return d, err
}

func (s recordedStore) Retry(id string, now time.Time) (storage.Delivery, error) {
	d, err := s.Store.Retry(id, now)
	if err == nil {
		s.sink.Record(d)
	}
	return d, err
}

func (s recordedStore) Release(ids []string, now time.Time) ([]storage.Delivery, error) {
	recs, err := s.Store.Release(ids, now)
	for _, d := range recs {
		s.sink.Record(d)
	}
	return recs, err
}

func (s recordedStore) Cancel(ids []string, reason string) ([]storage.Delivery, error) {
	recs, err := s.Store.Cancel(ids, reason)
	for _, d := range recs {
		s.sink.Record(d)
	}
	return recs, err
}

func (s recordedStore) RetryMany(ids []string, now time.Time) ([]storage.Delivery, error) {
	recs, err := s.Store.RetryMany(ids, now)
	for _, d := range recs {
		s.sink.Record(d)
	}
	return recs, err
}

// AttemptStarted passes the news on to a store that wants it.
func (s recordedStore) AttemptStarted(id string) bool {
	a, ok := s.Store.(AttemptStarter)
	return !ok || a.AttemptStarted(id)
}
