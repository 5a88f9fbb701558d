package presence_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/herald-rt/herald/internal/redistest"
)

// TestMain checks for leaked goroutines after the tests, and stops the shared Redis
// servers the Redis tests started.
func TestMain(m *testing.M) { goleak.VerifyTestMain(redistest.Main(m)) }
