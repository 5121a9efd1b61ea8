package vinequeue

import "math/bits"

// KeyOf hashes a string key (a Kafka record key, a user id, a tenant) to the
// uint64 that EnqueueKey takes: equal strings give equal keys, so their items
// keep their order, and distinct strings spread evenly over the queue's keyed
// shards.
//
// The hash is XXH64 with seed 0 (xxHash's published 64-bit algorithm), so any
// other implementation of it computes the same values. It is part of the
// package's compatibility promise and will not change: a program that keys
// items by KeyOf in one version and by a reimplementation (or a later
// version) elsewhere keeps the same per-key order. It does not allocate and
// reads the string in 8-byte steps. It is not a cryptographic hash: keys
// chosen by an adversary can be made to collide, which costs only
// parallelism (colliding keys share one FIFO), never order or data.
func KeyOf(s string) uint64 {
	const (
		p1 = 11400714785074694791
		p2 = 14029467366897019727
		p3 = 1609587929392839161
		p4 = 9650029242287828579
		p5 = 2870177450012600261
	)
	n := len(s)
	var h uint64
	if n >= 32 {
		v1 := uint64(p1)
		v1 += p2
		v2 := uint64(p2)
		v3 := uint64(0)
		v4 := uint64(0)
		v4 -= p1
		for len(s) >= 32 {
			v1 = xxRound(v1, le64(s[0:8]))
			v2 = xxRound(v2, le64(s[8:16]))
			v3 = xxRound(v3, le64(s[16:24]))
			v4 = xxRound(v4, le64(s[24:32]))
			s = s[32:]
		}
		h = bits.RotateLeft64(v1, 1) + bits.RotateLeft64(v2, 7) + bits.RotateLeft64(v3, 12) + bits.RotateLeft64(v4, 18)
		h = xxMerge(h, v1)
		h = xxMerge(h, v2)
		h = xxMerge(h, v3)
		h = xxMerge(h, v4)
	} else {
		h = p5
	}
	h += uint64(n)
	for ; len(s) >= 8; s = s[8:] {
		h ^= xxRound(0, le64(s[:8]))
		h = bits.RotateLeft64(h, 27)*p1 + p4
	}
	if len(s) >= 4 {
		h ^= uint64(le32(s[:4])) * p1
		h = bits.RotateLeft64(h, 23)*p2 + p3
		s = s[4:]
	}
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i]) * p5
		h = bits.RotateLeft64(h, 11) * p1
	}
	h ^= h >> 33
	h *= p2
	h ^= h >> 29
	h *= p3
	h ^= h >> 32
	return h
}

func xxRound(acc, input uint64) uint64 {
	acc += input * 14029467366897019727
	acc = bits.RotateLeft64(acc, 31)
	return acc * 11400714785074694791
}

func xxMerge(acc, val uint64) uint64 {
	acc ^= xxRound(0, val)
	return acc*11400714785074694791 + 9650029242287828579
}

// le64 and le32 read little-endian words from a string without converting
// it to a []byte (which could allocate); the compiler merges the byte loads.
func le64(b string) uint64 {
	_ = b[7]
	return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
		uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
}

func le32(b string) uint32 {
	_ = b[3]
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
