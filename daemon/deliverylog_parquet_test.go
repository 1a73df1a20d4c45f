package daemon

import (
	"github.com/parquet-go/parquet-go"

	"github.com/notifyd/notifyd/store/deliverylog"
)

func parquetReadFile(path string) ([]deliverylog.Record, error) {
	return parquet.ReadFile[deliverylog.Record](path)
}
