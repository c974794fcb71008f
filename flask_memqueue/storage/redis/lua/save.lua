-- Record one outcome: ARGV = owner, then 18 values (see settle). Returns false or the stored status.
return settle(ARGV[1], 2)
