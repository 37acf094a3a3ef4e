"""The AMI wire: capture reader, live connection (panoramisk), recorder, PBX simulator."""
