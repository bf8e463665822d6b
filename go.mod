module minirun

go 1.26.8

require (
	github.com/apptainer/sif/v2 v2.25.0
	github.com/pelletier/go-toml/v2 v2.4.3
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
)

require (
	github.com/google/go-containerregistry v0.22.1 // indirect
	github.com/google/uuid v1.6.0 // indirect
)
