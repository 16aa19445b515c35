"""Tests of the OCI image layout reader and writer."""
