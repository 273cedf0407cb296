package fleet

// Crash stops q as kill -9 would: its renewals stop and what it holds is
// neither acknowledged nor given back.
func (q *Queue) Crash() {
	q.cancel()
	q.wg.Wait()
	q.mu.Lock()
	q.held, q.cause = map[string]*heldMsg{}, errQueueClosed
	q.mu.Unlock()
}
