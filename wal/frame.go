package wal

import (
	"encoding/binary"
	"fmt"
)

// AppendFrame appends item to dst framed as uvarint(len(item)) followed by
// the item's bytes. A record payload made of frames holds a batch of items;
// ForEachItem splits it again. Log.AppendItems builds its records this way,
// and a record's item count (for AckRange) is its number of frames.
func AppendFrame(dst, item []byte) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(item)))
	return append(dst, item...)
}

// FrameSize is the number of bytes AppendFrame adds for an n-byte item.
func FrameSize(n int) int {
	k := 1
	for u := uint64(n); u >= 0x80; u >>= 7 {
		k++
	}
	return k + n
}

// ForEachItem calls fn for every item framed in payload, in order. The item
// aliases payload. It stops at the first error fn returns, and reports a
// frame that runs past the payload as ErrCorrupt (never a panic or an
// allocation).
func ForEachItem(payload []byte, fn func(item []byte) error) error {
	for off := 0; off < len(payload); {
		n, k := binary.Uvarint(payload[off:])
		if k <= 0 {
			return fmt.Errorf("%w: item frame at payload offset %d", ErrCorrupt, off)
		}
		off += k
		if n > uint64(len(payload)-off) {
			return fmt.Errorf("%w: item of %d bytes at payload offset %d runs past the payload (%d bytes)", ErrCorrupt, n, off, len(payload))
		}
		if err := fn(payload[off : off+int(n)]); err != nil {
			return err
		}
		off += int(n)
	}
	return nil
}

// countFrames returns the number of frames in payload, or 1 if payload is
// not a sequence of frames (or holds none): a record's item count.
func countFrames(payload []byte) int {
	n := 0
	for off := 0; off < len(payload); n++ {
		size, k := binary.Uvarint(payload[off:])
		if k <= 0 || size > uint64(len(payload)-off-k) {
			return 1
		}
		off += k + int(size)
	}
	return max(n, 1)
}
