// Package fleet is the JetStream backend of a fleet of edges: the replay
// records that make itns_verify's dedupe fleet-wide, and the registry of
// the edges' node names. NATS JetStream replicates them (Raft); nothing
// here replicates on its own.
//
// Everything an edge writes to NATS is sealed with the store's encryption
// key first (AES-256-GCM, the key name as associated data), so no value is
// in clear on the NATS servers' disks.
//
// The package is plain Go: it imports nats.go and the standard library,
// never Caddy.
package fleet
