package storage

import (
	"fmt"
	"maps"
	"slices"
)

// Notification log records are encoded like delivery records (codec.go):
// a version byte, then varints and length-prefixed strings. The id and the
// time are the key's, so they are not repeated. JSON, the first format,
// took three times the bytes, and the log is the larger part of what the
// store keeps (docs/performance-history.md, "The notification log's own
// store").
const notificationV1 = 1

func encodeNotification(n *Notification) []byte {
	size := 16 + len(n.Host) + len(n.Path) + len(n.Method) + len(n.IP) + len(n.Reason)
	for _, d := range n.Deliveries {
		size += 1 + len(d)
	}
	for k, v := range n.Labels {
		size += 2 + len(k) + len(v)
	}
	e := encoder{b: make([]byte, 0, size)}
	e.byte(notificationV1)
	e.str(n.Host)
	e.str(n.Path)
	e.str(n.Method)
	e.str(n.IP)
	e.byte(byte(slices.Index(Outcomes, n.Outcome)))
	e.str(n.Reason)
	e.uvarint(uint64(max(n.Status, 0)))
	e.uvarint(uint64(len(n.Deliveries)))
	for _, d := range n.Deliveries {
		e.str(d)
	}
	// Sorted, so that a record always encodes to the same bytes.
	e.uvarint(uint64(len(n.Labels)))
	for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
		e.str(k)
		e.str(n.Labels[k])
	}
	return e.b
}

func decodeNotification(i id, b []byte) (Notification, error) {
	d := decoder{b: b}
	if v := d.byte(); v != notificationV1 && d.err == nil {
		return Notification{}, fmt.Errorf("notification %s: unknown record version %d", i, v)
	}
	n := Notification{ID: i.String(), At: i.time()}
	n.Host = d.str()
	n.Path = d.str()
	n.Method = d.str()
	n.IP = d.str()
	if o := int(d.byte()); o < len(Outcomes) {
		n.Outcome = Outcomes[o]
	} else {
		d.fail()
	}
	n.Reason = d.str()
	n.Status = int(d.uvarint())
	if c := d.count(); c > 0 {
		n.Deliveries = make([]string, c)
		for k := range n.Deliveries {
			n.Deliveries[k] = d.str()
		}
	}
	if c := d.count(); c > 0 {
		n.Labels = make(map[string]string, c)
		for range c {
			k := d.str()
			n.Labels[k] = d.str()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return Notification{}, fmt.Errorf("notification %s: %w", i, d.err)
	}
	return n, nil
}
