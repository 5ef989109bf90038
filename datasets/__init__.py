"""Event data: readers, Tonic datasets, the embedded ndigits set, frames, caching."""
