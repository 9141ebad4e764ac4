# femnpde container: Debian sid with DOLFINx 0.11 from Debian's packages.
# The package list is the same file scripts/env-run builds its root filesystem
# from, so the container is the environment the tests ran in.
#
#   docker build -t femnpde .
#   docker run --rm -v "$PWD/runs:/opt/femnpde/runs" femnpde                       # the quick-start training
#   docker run --rm femnpde mpirun -n 2 femnpde gradcheck --pde allen-cahn --N 20  # MPI inside the container
FROM debian:sid

ENV DEBIAN_FRONTEND=noninteractive
COPY scripts/debian-packages.txt scripts/pip-requirements.txt /tmp/femnpde/
RUN printf 'APT::Install-Recommends "false";\nAcquire::Check-Valid-Until "false";\n' > /etc/apt/apt.conf.d/90femnpde \
    && apt-get update \
    && apt-get install -y --no-install-recommends $(sed -e 's/#.*//' /tmp/femnpde/debian-packages.txt) \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv --system-site-packages /opt/femnpde-venv \
    && /opt/femnpde-venv/bin/python -m pip install --no-cache-dir -r /tmp/femnpde/pip-requirements.txt

ENV PATH=/opt/femnpde-venv/bin:$PATH \
    OMPI_ALLOW_RUN_AS_ROOT=1 \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_btl=self,sm \
    PRTE_MCA_mapby=:oversubscribe \
    ADIOS2_ALWAYS_USE_MPI=1

WORKDIR /opt/femnpde
COPY . /opt/femnpde
RUN python -m pip install --no-cache-dir --no-deps --no-build-isolation -e /opt/femnpde \
    && femnpde info

CMD ["femnpde", "train", "demos/quickstart.toml", "--out", "runs/quickstart"]
