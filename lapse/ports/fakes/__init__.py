"""ports/fakes"""
