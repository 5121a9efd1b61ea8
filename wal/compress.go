package wal

import (
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/golang/snappy"
	"github.com/pierrec/lz4/v4"
)

// Compression selects how record payloads are compressed. The numbering
// matches the root package's WALConfig.Compression, so converting is a cast.
// A payload that does not shrink is stored uncompressed whatever the choice;
// every record names its own codec, so a log reopened with another choice
// reads its old records fine.
type Compression uint8

const (
	Snappy        Compression = iota // default
	LZ4                              // lz4 block format, raw length prefixed as a uvarint
	NoCompression                    // store payloads as they are
)

// String returns the codec's name.
func (c Compression) String() string {
	switch c {
	case Snappy:
		return "snappy"
	case LZ4:
		return "lz4"
	case NoCompression:
		return "none"
	}
	return fmt.Sprintf("Compression(%d)", uint8(c))
}

func (c Compression) codec() uint8 {
	switch c {
	case Snappy:
		return codecSnappy
	case LZ4:
		return codecLZ4
	}
	return codecNone
}

func codecName(codec uint8) string {
	switch codec {
	case codecNone:
		return "none"
	case codecSnappy:
		return "snappy"
	case codecLZ4:
		return "lz4"
	}
	return fmt.Sprintf("codec(%d)", codec)
}

// compressor holds the reusable state of one goroutine's compression. Not
// safe for concurrent use.
type compressor struct {
	c   Compression
	buf []byte
	lz  lz4.Compressor
}

// compressors keeps the compressors of the goroutines that write records
// (a Queue's senders and collector), buffers and all, across garbage
// collections: a sync.Pool drops them at every other GC, and a writer of
// records of hundreds of KiB then allocated (and zeroed, and faulted in)
// a buffer as large for each of its next records. It keeps at most
// keptCompressors, and none whose buffer is over keptCompressBuf, so that
// an idle Log holds little.
type compressors struct {
	c    Compression
	mu   sync.Mutex
	free []*compressor
}

const (
	keptCompressors = 16
	keptCompressBuf = 1 << 20
)

func (p *compressors) get() *compressor {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		z := p.free[n-1]
		p.free[n-1] = nil
		p.free = p.free[:n-1]
		p.mu.Unlock()
		return z
	}
	p.mu.Unlock()
	return &compressor{c: p.c}
}

func (p *compressors) put(z *compressor) {
	if cap(z.buf) > keptCompressBuf {
		return
	}
	p.mu.Lock()
	if len(p.free) < keptCompressors {
		p.free = append(p.free, z)
	}
	p.mu.Unlock()
}

// compress returns the bytes to store for payload and their codec. The
// result aliases either payload or the compressor's buffer.
func (z *compressor) compress(payload []byte) ([]byte, uint8) {
	if len(payload) < 32 {
		return payload, codecNone // too small to win anything
	}
	switch z.c {
	case Snappy:
		n := snappy.MaxEncodedLen(len(payload))
		if n < 0 {
			return payload, codecNone
		}
		z.buf = grow(z.buf, n)
		out := snappy.Encode(z.buf, payload)
		if len(out) < len(payload) {
			return out, codecSnappy
		}
	case LZ4:
		bound := lz4.CompressBlockBound(len(payload)) + binary.MaxVarintLen64
		z.buf = grow(z.buf, bound)
		k := binary.PutUvarint(z.buf, uint64(len(payload)))
		n, err := z.lz.CompressBlock(payload, z.buf[k:])
		if err == nil && n > 0 && k+n < len(payload) {
			return z.buf[:k+n], codecLZ4
		}
	}
	return payload, codecNone
}

// Neither format can expand input by more than these factors (snappy: a
// 3-byte copy emits at most 64 bytes; lz4: each extra length byte adds at
// most 255), so a claimed raw length beyond them is damage, refused before
// any buffer is allocated for it.
const (
	maxSnappyExpansion = 32
	maxLZ4Expansion    = 256
)

// decompress returns the raw payload for stored bytes of the given codec,
// using buf as scratch. maxRaw bounds the claimed raw length, so a damaged
// length prefix is an error and never an allocation.
func decompress(buf []byte, codec uint8, stored []byte, maxRaw int) ([]byte, []byte, error) {
	switch codec {
	case codecNone:
		return stored, buf, nil
	case codecSnappy:
		n, err := snappy.DecodedLen(stored)
		if err != nil {
			return nil, buf, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
		}
		if n > maxRaw || n > maxSnappyExpansion*len(stored)+64 {
			return nil, buf, fmt.Errorf("%w: snappy length %d for %d stored bytes, the limit is %d", ErrCorrupt, n, len(stored), maxRaw)
		}
		buf = grow(buf, n)
		out, err := snappy.Decode(buf[:n], stored)
		if err != nil {
			return nil, buf, fmt.Errorf("%w: snappy: %v", ErrCorrupt, err)
		}
		return out, buf, nil
	case codecLZ4:
		raw, k := binary.Uvarint(stored)
		if k <= 0 {
			return nil, buf, fmt.Errorf("%w: lz4 length prefix", ErrCorrupt)
		}
		if raw > uint64(maxRaw) || raw > uint64(maxLZ4Expansion*len(stored)+64) {
			return nil, buf, fmt.Errorf("%w: lz4 length %d for %d stored bytes, the limit is %d", ErrCorrupt, raw, len(stored), maxRaw)
		}
		if raw == 0 {
			// Never written (tiny payloads are stored raw), and the lz4
			// decoder must not be handed an empty destination.
			return nil, buf, fmt.Errorf("%w: lz4 block of 0 bytes", ErrCorrupt)
		}
		buf = grow(buf, int(raw))
		n, err := lz4.UncompressBlock(stored[k:], buf[:raw])
		if err != nil {
			return nil, buf, fmt.Errorf("%w: lz4: %v", ErrCorrupt, err)
		}
		if n != int(raw) {
			return nil, buf, fmt.Errorf("%w: lz4 gave %d bytes, want %d", ErrCorrupt, n, raw)
		}
		return buf[:n], buf, nil
	}
	return nil, buf, fmt.Errorf("%w: unknown codec %d", ErrCorrupt, codec)
}

// grow returns b with capacity for at least n bytes and length n.
func grow(b []byte, n int) []byte {
	if cap(b) < n {
		return make([]byte, n)
	}
	return b[:n]
}
