// Package shard provides Stack, the CAS-based multi-producer single-consumer
// hand-off behind vinequeue's "batch transfer": when a producer's per-P ring
// is full, the whole ring moves to the central shard in one compare-and-swap
// and the producer carries on with an empty ring from the pool. The
// collector takes every handed-off ring at once and drains them.
//
// # What it owns
//
// Only the list head. Nodes are the caller's (intrusive: a node carries its
// own link, returned by its Link method), so a push allocates nothing.
//
// # Invariants
//
// A node is in at most one Stack at a time, and its link is written only by
// the Push that publishes it: between that Push and the TakeAll that removes
// it, the node belongs to the stack. Push is the classic Treiber push: it has
// no ABA hazard because nodes are never popped one at a time; the single
// consumer detaches the whole list with one Swap.
//
// # Concurrency contract
//
// Push: any number of goroutines, lock-free (a CAS loop that fails only when
// another Push succeeded). TakeAll: one goroutine at a time (the consumer).
// Items pushed by one goroutine are taken in the order it pushed them;
// TakeAll returns them oldest first.
package shard
