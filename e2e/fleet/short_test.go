package fleet

import (
	"os"
	"testing"

	"github.com/ffmpeg-rtmp/worker-exporters/internal/testkit/exportertest"
)

func TestMain(m *testing.M) {
	exportertest.SkipUnderShort("end-to-end tests of the gateway and VictoriaMetrics")
	os.Exit(m.Run())
}
