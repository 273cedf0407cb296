// Package delivery copies accepted notifications to their secondary
// destinations (DINs): one loop per DIN pages through the durable queue,
// attempts each due delivery over HTTP with a per-destination concurrency
// limit, schedules retries with jitter (honouring Retry-After), and hands what
// exhausted its schedule to the spool. Delivery is at-least-once: a delivery
// stays pending in the store until an attempt's outcome is recorded, so
// whatever was in flight at a crash or a cancelled stop is retried later.
//
// It depends on the standard library and the storage package only.
package delivery
