"""Test fixtures shared by every service's tests: real engines, real HTTP servers, the whole stack."""
