package pubsub

import "strconv"

// numSlots is the number of hash slots of a Redis Cluster.
const numSlots = 16384

// crc16Table is the table of CRC-16/XMODEM (polynomial 0x1021, initial value 0), the
// checksum Redis Cluster maps keys to slots with.
var crc16Table = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func crc16[T string | []byte](b T) uint16 {
	var c uint16
	for i := 0; i < len(b); i++ {
		c = c<<8 ^ crc16Table[byte(c>>8)^b[i]]
	}
	return c
}

// keySlot is the cluster slot of a key or shard channel: the CRC16 of its hash tag (what
// lies between the first '{' and the first '}' after it, when that is not empty), or of
// the whole key.
func keySlot[T string | []byte](key T) int {
	for i := 0; i < len(key); i++ {
		if key[i] != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j > i+1 {
					return int(crc16(key[i+1:j])) & (numSlots - 1)
				}
				break
			}
		}
		break
	}
	return int(crc16(key)) & (numSlots - 1)
}

// slotTag returns the first of the tags "0", "1", … whose slot owns reports true, so
// that "name:{tag}" is a shard channel served by the shard owns stands for. The slots of
// the decimal numbers cover every slot within a few hundred thousand, so a shard that
// owns at least one slot always gets one; ok is false when it owns none.
func slotTag(owns func(slot int) bool) (tag string, ok bool) {
	var buf [20]byte
	for i := range uint64(1 << 20) {
		b := strconv.AppendUint(buf[:0], i, 10)
		if owns(int(crc16(b)) & (numSlots - 1)) {
			return string(b), true
		}
	}
	return "", false
}
