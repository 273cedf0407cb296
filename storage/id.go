package storage

import "time"

// CreatedAt is the creation time a delivery id holds, for a history kept
// outside this store (a fleet's) that filters by time without the record.
func CreatedAt(deliveryID string) (time.Time, bool) {
	i, ok := parseID(deliveryID)
	if !ok {
		return time.Time{}, false
	}
	return i.time(), true
}
