// Package alert tells operators, through webhooks (Slack or Teams incoming
// webhooks, or any endpoint that takes JSON), when deliveries are in
// trouble: a circuit opened or closed, a delivery failed or was spooled,
// the oldest pending delivery is too old, the store refuses writes.
//
// An Alerter never blocks its callers: events go into a bounded queue
// (dropped and counted when it is full), are debounced per destination and
// event, and are posted by one goroutine per webhook with bounded retries.
// An alert carries no transaction data, only what happened, where and when.
package alert
