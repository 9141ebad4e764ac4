# femnpde container: Debian sid with DOLFINx 0.11 (python3-dolfinx-real 0.11,
# PETSc 3.25, Open MPI 6) from Debian's packages.
#
# Reproducible: the base image is a dated sid tag and apt installs from the
# Debian archive snapshot of the same date (apt's --snapshot), so a rebuild
# gets the same packages whatever sid holds today.  To move to a newer sid,
# change both dates together (and check the tests in the image).
#
# The package lists are the files scripts/env-run builds its root filesystem
# from (scripts/debian-packages.txt, scripts/pip-requirements.txt), so the
# container is the environment the tests ran in.
#
#   docker build -t femnpde .
#   docker run --rm -v "$PWD/runs:/opt/femnpde/runs" femnpde                       # the quick-start training
#   docker run --rm femnpde mpirun -n 2 femnpde gradcheck --pde allen-cahn --N 20  # MPI inside the container
ARG DEBIAN_TAG=sid-20261124
FROM debian:${DEBIAN_TAG}
ARG DEBIAN_SNAPSHOT=20261124T000000Z

ENV DEBIAN_FRONTEND=noninteractive
COPY scripts/debian-packages.txt scripts/pip-requirements.txt /tmp/femnpde/
RUN printf 'APT::Install-Recommends "false";\nAcquire::Check-Valid-Until "false";\n' > /etc/apt/apt.conf.d/90femnpde \
    && apt-get --snapshot "$DEBIAN_SNAPSHOT" update \
    && apt-get --snapshot "$DEBIAN_SNAPSHOT" install -y --no-install-recommends $(sed -e 's/#.*//' /tmp/femnpde/debian-packages.txt) \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv --system-site-packages /opt/femnpde-venv \
    && /opt/femnpde-venv/bin/python -m pip install --no-cache-dir -r /tmp/femnpde/pip-requirements.txt

# The same MPI settings as scripts/env-run: root may run mpirun, shared-memory
# transport, and more ranks than cores (this Open MPI reads PRTE_MCA_mapby;
# the older name PRTE_MCA_rmaps_default_mapping_policy is deprecated).
ENV PATH=/opt/femnpde-venv/bin:$PATH \
    OMPI_ALLOW_RUN_AS_ROOT=1 \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_btl=self,sm \
    PRTE_MCA_mapby=:oversubscribe \
    ADIOS2_ALWAYS_USE_MPI=1

WORKDIR /opt/femnpde
COPY . /opt/femnpde
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation -e /opt/femnpde \
    && femnpde info \
    && mpirun -n 4 femnpde info

CMD ["femnpde", "train", "demos/quickstart.toml", "--out", "runs/quickstart"]
