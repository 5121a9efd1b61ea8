// Package sinkmodel models the sink a queue delivers to — typically a Kafka
// producer — for tests and benchmarks of batch sizing.
//
// A Model gives the latency of one Send as a fixed cost per call plus a cost
// per item, with a knee beyond which each item costs much more, and optional
// uniform noise. Two ways to drive it:
//
//   - Run: a deterministic discrete-event simulation of W workers sending back
//     to back through a Policy (a batch.Sizer, or Fixed for a sweep), with the
//     model changing at given simulated times. It reads no clock, so tests
//     built on it assert on simulated throughput and simulated time only.
//   - Sink: a Send that waits out the modelled latency on a Clock — SimClock
//     (advances a counter, for deterministic single-sender tests) or
//     RealClock (sleeps then spins, for benchmarks against a real queue;
//     never for tests) — and whose Model can be swapped mid-run.
//
// Throughput is items delivered per second of (simulated) time: with W
// workers always busy it is the sum over workers of batch/latency. A Send
// still in flight when the simulation ends is credited pro rata.
//
// Concurrency: Model, Fixed and Result are values; Sink, SimClock and
// RealClock are safe for concurrent use; Run is single-goroutine and calls
// the Policy from that goroutine only.
package sinkmodel
