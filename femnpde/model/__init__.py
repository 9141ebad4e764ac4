"""femnpde.model."""
