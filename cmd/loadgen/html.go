package main

import (
	"bufio"
	"errors"
	"os"

	"github.com/herald-rt/herald/loadgen"
	"github.com/herald-rt/herald/loadgen/report"
)

// writeHTMLFile renders rep as the self-contained HTML report.
func writeHTMLFile(path string, rep *loadgen.Report) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	err = report.WriteHTML(w, rep)
	return errors.Join(err, w.Flush(), f.Close())
}
