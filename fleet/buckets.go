package fleet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// schemaVersion is written into every bucket's metadata; a bucket with
// another one was made by another version of caddy-postback and is not
// used (its values would be misread).
const schemaVersion = 1

const schemaKey = "caddy_postback_schema"

// markerTTL is how long JetStream keeps the marker of a key whose own TTL
// ran out; per-key TTLs need it set on the bucket.
const markerTTL = time.Minute

// bucket opens the KV bucket <prefix>_<name>, making it if absent, and
// checks that it is ours and replicated as configured.
func (f *Fleet) bucket(ctx context.Context, name, what string) (jetstream.KeyValue, error) {
	full := f.opts.Prefix + "_" + name
	kv, err := f.js.KeyValue(ctx, full)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = f.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:         full,
			Description:    "caddy-postback: " + what,
			History:        1,
			Replicas:       f.opts.Replicas,
			Storage:        jetstream.FileStorage,
			LimitMarkerTTL: markerTTL,
			Metadata:       map[string]string{schemaKey: strconv.Itoa(schemaVersion)},
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			// Another edge made it first.
			kv, err = f.js.KeyValue(ctx, full)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("cluster: bucket %s: %w", full, explain(err, f.opts.Replicas))
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: bucket %s: %w", full, err)
	}
	info := st.(*jetstream.KeyValueBucketStatus).StreamInfo()
	if v := info.Config.Metadata[schemaKey]; v != strconv.Itoa(schemaVersion) {
		if v == "" {
			v = "none"
		}
		return nil, fmt.Errorf("cluster: bucket %s was not made by this version of caddy-postback (schema %s, want %d); use another prefix, or remove the bucket", full, v, schemaVersion)
	}
	if info.Config.Replicas != f.opts.Replicas {
		return nil, fmt.Errorf("cluster: bucket %s has %d replicas, the config asks for %d; every edge must use the same replicas", full, info.Config.Replicas, f.opts.Replicas)
	}
	return kv, nil
}

// JetStream's error codes for more replicas than servers (nats.go names
// neither).
const (
	errInsufficientResources jetstream.ErrorCode = 10023
	errReplicasNotClustered  jetstream.ErrorCode = 10074
)

// explain turns JetStream's refusals that a config causes into advice.
func explain(err error, replicas int) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case errInsufficientResources, errReplicasNotClustered:
			return fmt.Errorf("%w (replicas %d: are there that many JetStream servers?)", err, replicas)
		}
	}
	return err
}
