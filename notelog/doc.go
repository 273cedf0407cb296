// Package notelog is the notification log: one record for every request a
// postback handler sees (its outcome, the script's status, its delivery ids
// and the values of the fields named as labels), written off the request
// path.
//
// The first postback handler of a request makes its Note and puts it on
// the request's context; the handlers after it add to it; the first one
// finishes it when the chain has returned. Finish never blocks: records go
// through a bounded queue to one writer goroutine that stores them in
// batches (storage.Store.AppendNotifications, unsynced). The records that
// were not accepted get a budget per hour, so that a flood of refusals
// cannot fill the disk; what the queue or the budget cannot take is
// dropped and counted.
package notelog
