// Package shard will hold the CAS-based MPSC central shards of the delivery
// engine (issue 3): a full ring segment moves to a shard as one chunk in a
// single compare-and-swap, partial rings are drained on the timer, on Flush and
// on Stop, and chunks are recycled so that steady state allocates nothing.
//
// Planned contract: producers (any number) publish chunks with one CAS and no
// lock; one consumer (the queue's collector) takes them in publication order.
// A chunk's items are owned by the producer until the CAS succeeds and by the
// consumer after it.
//
// Today the collector copies straight from the per-P rings into batches (see
// the root package), and EnqueueKey's per-key FIFO uses a mutex per keyed
// shard; this package has no code yet.
package shard
